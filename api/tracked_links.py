"""`GET|HEAD /r/{code}` as a Litestar route: what the OpenAPI document shows of the redirect.

On the hot path uvicorn serves `RedirectFront` (api/redirect.py), which hands `/r/...` to the
raw ASGI redirect before Litestar sees it. This route documents that path and serves it when
`create_app()` runs on its own (no front), by handing the request to the same redirect app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import HttpMethod, Request, route
from litestar.datastructures import State
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.response.base import ASGIResponse

RawApp = Callable[[Any, Any, Any], Awaitable[None]]


class _Handover(ASGIResponse):
    """An ASGI "response" that lets the redirect app answer on the real connection."""

    def __init__(self, app: RawApp, path: str) -> None:
        super().__init__()
        self._app, self._path = app, path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app({**scope, "path": self._path}, receive, send)


def _operation_id(_handler: HTTPRouteHandler, method: str, _path: list[str | Any]) -> str:
    return "followTrackedLink" if method == HttpMethod.GET else "probeTrackedLink"


@route(
    "/r/{code:str}",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    status_code=302,
    operation_id=_operation_id,
    tags=["redirect"],
    summary="Follow a tracked link",
    responses={
        302: ResponseSpec(
            data_container=None,
            description="Found: `Location` is the link's destination (with its UTM parameters). The click is "
            "stored with its bot verdict before the server stops; a HEAD request is counted as a bot's.",
            generate_examples=False,
        ),
        404: ResponseSpec(
            data_container=str,
            description="No tracked link has this code (an HTML page).",
            media_type="text/html",
            generate_examples=False,
        ),
    },
)
async def follow_tracked_link(request: Request[Any, Any, State], code: str) -> ASGIResponse:
    """The per-recipient short link of a sent message: a 302 to its destination, and a click for its
    recipient (forwarded messages count for the original recipient, whom the code names)."""
    return _Handover(request.app.state.redirect_app, "/" + code)
