"""Query parameters with a fixed set of values: documented as an enum in OpenAPI, and a value
outside it is a 400 that names the parameter and the values it takes (never silently ignored)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from litestar.params import Parameter

from core.campaigns.schemas import MAX_ID as MAX_ID
from core.errors import BadParameter


def choice(allowed: Iterable[str], *, default: str | None, description: str) -> Any:
    """A query parameter taking one of `allowed` (the handler checks it with `one_of`)."""
    return Parameter(default=default, description=description, schema_extra={"enum": list(allowed)})


def one_of(name: str, value: str | None, allowed: Iterable[str]) -> str | None:
    """`value` if it is one of `allowed` (None or empty: not given), else a BadParameter (400) that
    says so."""
    values = list(allowed)
    if not value or value in values:
        return value
    listed = ", ".join(values) if values else "(none: the campaign has no such values)"
    raise BadParameter(f"{name} must be one of {listed}; got {value!r}", extra={"parameter": name, "allowed": values})


# A path or query parameter holding a row's id: documented with its bounds in OpenAPI, and a value
# outside them (0, negative, past 64 bits) is a 400 that names the parameter, before any query.
Id = Annotated[int, Parameter(ge=1, le=MAX_ID, description="an id (1 to 2**63 - 1)")]
