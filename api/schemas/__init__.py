"""Response bodies of the public API (API.md) as TypedDicts, one per response shape.

Handlers keep returning plain dicts (nothing is converted per request); the annotations are what
Litestar turns into /schema/openapi.json, and what mypy checks the handlers against. A schema's
docstring becomes its description there (see `api.schemas.openapi`).

The modules here do not use `from __future__ import annotations`: under it, Python 3.11 cannot
see `NotRequired` in a TypedDict's string annotations and would call every key required.
"""
