"""Who may use /api and the dashboard: `Authorization: Bearer <secret>` of a live API key
(core/api_keys.py) or of TEXTPULSE_API_KEY, whenever either exists; with neither, both are open.

The dashboard's session cookie (`textpulse_dashboard`, made at its sign-in, api/dashboard.py)
counts as the key it was made with, on the dashboard's pages and on GET and HEAD of /api: the
page's script reads the live stats with it. Never on a POST or any other method, so a page of
another site cannot make a signed-in browser change anything (the cookie is SameSite=Lax too).

The guard runs before `bind_request_context` (Litestar calls guards first), which starts the log
context afresh, so the name of the key that let the request in waits on the request's state and
`bind_request_context` binds it (`key_name=<name>`; `env` for TEXTPULSE_API_KEY), whether it
came as a Bearer secret or a session. The field is not called `api_key`: the log masking
(core/log_masking.py) hides any field so named.
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, ServiceUnavailableException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from core.api_keys import KeyVerifier

SESSION_COOKIE = "textpulse_dashboard"
SESSION_METHODS = frozenset({"GET", "HEAD"})  # where /api takes the session: reads only
_STATE = "textpulse_api_key"

REFUSED = (
    "this route needs 'Authorization: Bearer <key>': a live API key (`textpulse keys create NAME`) or TEXTPULSE_API_KEY"
)


def presented_key(
    verifier: KeyVerifier, connection: ASGIConnection[Any, Any, Any, Any], *, session: bool
) -> str | None:
    """The name of the live key the request presents: its Bearer secret or, when `session`, the
    dashboard's session cookie; None for neither."""
    scheme, _space, secret = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secret:
        name = verifier.verify(secret)
        if name is not None:
            return name
    cookie = connection.cookies.get(SESSION_COOKIE) if session else None
    return verifier.verify_session(cookie) if cookie else None


def api_key_guard(verifier: KeyVerifier) -> Guard:
    """The guard of /api over `verifier` (a function: Litestar copies a router's guards deeply,
    and the verifier, with its engine, is one for the whole process). Async, so that it runs on
    the loop: Litestar runs a sync guard in a worker thread."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not verifier.required:
            return
        name = presented_key(verifier, connection, session=connection.scope.get("method") in SESSION_METHODS)
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
