"""/webhooks/{provider}/status and /inbound: provider callbacks, parsed and verified by the plugin.

The provider plugin sees the public URL the provider called (for signatures), the headers and
the raw body. Anything it refuses is a 4xx with its reason and nothing is stored.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException

from core.delivery import ingest_status_updates
from core.providers import WebhookError, WebhookRequest

MAX_WEBHOOK_BODY = 64_000


async def webhook_request(request: Request[Any, Any, Any], public_url: str) -> WebhookRequest:
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    form: dict[str, str] = {}
    if content_type.startswith("application/x-www-form-urlencoded"):
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError as exc:
            raise WebhookError(400, f"form body is not UTF-8: {exc}") from exc
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = f"{public_url}{request.url.path}" + (f"?{query}" if query else "")
    headers = {k.lower(): v for k, v in request.headers.items()}
    return WebhookRequest(url=url, headers=headers, body=body, content_type=content_type, form=form)


def _provider(state: State, name: str) -> Any:
    provider = state.registry.providers.get(name)
    if provider is None:
        raise NotFoundException(f"no provider named {name!r} is enabled")
    return provider


class WebhookController(Controller):
    path = "/webhooks/{provider_name:str}"
    tags = ["webhooks"]
    request_max_body_size = MAX_WEBHOOK_BODY

    @post("/status", operation_id="providerStatusCallback", status_code=200)
    async def status(self, state: State, request: Request[Any, Any, Any], provider_name: str) -> Response[Any]:
        """A delivery callback. Stored raw, applied if it moves the message forward; an unknown
        message id is kept (flagged) and answered 200 so the provider does not retry forever."""
        provider = _provider(state, provider_name)
        incoming = await webhook_request(request, state.settings.public_url)
        updates = provider.parse_status(incoming)  # raises WebhookError (4xx) on a bad request
        raw = {"content_type": incoming.content_type, "body": incoming.body.decode("utf-8", "replace")}
        registry = state.registry

        def on_change(message_id: int, old: str, new: str) -> None:
            registry.pm.hook.on_message_status(message=message_id, old_status=old, new_status=new)

        outcome = await anyio.to_thread.run_sync(
            lambda: ingest_status_updates(state.engine, provider.name, updates, raw, on_change=on_change)
        )
        return Response(asdict(outcome), status_code=200)
