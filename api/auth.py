"""The guard of /api: `Authorization: Bearer <secret>` of a live API key (core/api_keys.py) or of
TEXTPULSE_API_KEY, whenever either exists; with neither, /api is open.

The guard runs before `bind_request_context` (Litestar calls guards first), which starts the log
context afresh, so the name of the key that let the request in waits on the request's state and
`bind_request_context` binds it (`key_name=<name>`; `env` for TEXTPULSE_API_KEY). The field is
not called `api_key`: the log masking (core/log_masking.py) hides any field so named.
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, ServiceUnavailableException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from core.api_keys import KeyVerifier

_STATE = "textpulse_api_key"

REFUSED = (
    "this route needs 'Authorization: Bearer <key>': a live API key (`textpulse keys create NAME`) or TEXTPULSE_API_KEY"
)


def api_key_guard(verifier: KeyVerifier) -> Guard:
    """The guard of /api over `verifier` (a function: Litestar copies a router's guards deeply,
    and the verifier, with its engine, is one for the whole process). Async, so that it runs on
    the loop: Litestar runs a sync guard in a worker thread."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not verifier.required:
            return
        scheme, _space, secret = connection.headers.get("authorization", "").partition(" ")
        name = verifier.verify(secret) if scheme.lower() == "bearer" and secret else None
        if name is None:
            if not verifier.loaded:  # a stored key may be right: the database will say soon
                raise ServiceUnavailableException("the API keys cannot be read from the database yet; try again")
            raise NotAuthorizedException(REFUSED, headers={"WWW-Authenticate": "Bearer"})
        connection.state[_STATE] = name

    return guard


def bind_key_name(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Name, in the request's log context, the key the guard let it in with (none when /api is
    open or the route is not under it)."""
    name = connection.state.get(_STATE)
    if name is not None:
        structlog.contextvars.bind_contextvars(key_name=name)
