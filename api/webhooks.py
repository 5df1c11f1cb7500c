"""/webhooks/{provider}/status and /inbound: provider callbacks, parsed and verified by the plugin.

The provider plugin sees the public URL the provider called (for signatures), the headers and
the raw body, and refuses what it cannot verify or read: a 4xx with its reason, nothing stored.
Here: a body over 64 kB is a 413, one without a content type a 415, an unknown provider a 404.

Status callbacks are the hot path (a campaign of a million messages brings two or three million
of them), so the routes are served by `WebhookApp`, a raw ASGI app like /r, run by the
controller's middleware: the controller still declares both routes (OpenAPI, routing), and its
handlers do the same work through Litestar if the middleware is ever taken away. Concurrent
status callbacks are written together by the status writer on `app.state`
(core/delivery/status_writer.py: one transaction for all that arrived while the previous one was
written), and each is answered only after its transaction committed, so an answered callback is
a stored one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from litestar import Controller, Request, Response, post
from litestar.datastructures import State

from core.delivery.replies import ReplyTexts, handle_inbound
from core.delivery.status_writer import StoreFailed
from core.hooks.contracts import WebhookError, WebhookRequest
from core.hooks.payloads import reply_received
from core.log import get_logger

log = get_logger("textpulse.webhooks")

MAX_WEBHOOK_BODY = 64_000


@dataclass
class Answer:
    status_code: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def _json(status_code: int, data: Any) -> Answer:
    return Answer(status_code, json.dumps(data).encode())


def error_answer(status_code: int, detail: str) -> Answer:
    """Litestar's error shape, so webhook errors read like every other API error."""
    return _json(status_code, {"status_code": status_code, "detail": detail, "extra": None})


def make_webhook_request(
    public_url: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> WebhookRequest:
    content_type = headers.get("content-type", "")
    if not content_type.strip():
        raise WebhookError(415, "a Content-Type header is required (the provider's callback format)")
    form: dict[str, str] = {}
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise WebhookError(400, f"form body is not UTF-8: {exc}") from exc
    url = f"{public_url}{path}" + (f"?{query}" if query else "")
    return WebhookRequest(url=url, headers=headers, body=body, content_type=content_type, form=form)


async def handle_status(state: State, provider_name: str, incoming: WebhookRequest) -> Answer:
    provider = state.registry.providers.get(provider_name)
    if provider is None:
        return error_answer(404, f"no provider named {provider_name!r} is enabled")
    try:
        outcome = await state.status_writer.submit(provider, incoming)  # parsed (4xx) and stored there
    except StoreFailed as exc:
        return error_answer(503, str(exc))
    if outcome.unmatched:
        log.warning(
            "status callback for a message id not known (yet): stored, flagged",
            provider=provider.name,
            ids=outcome.unmatched_ids,
        )
    # An empty 200 (one write on the wire); what happened is in headers, for people with curl.
    return Answer(
        200,
        b"",
        "text/plain",
        [
            (b"x-textpulse-stored", str(outcome.stored).encode()),
            (b"x-textpulse-changed", str(outcome.changed).encode()),
            (b"x-textpulse-unmatched", _header_safe(",".join(outcome.unmatched_ids))),
        ],
    )


def _header_safe(text: str) -> bytes:
    """Ids as a header value: printable ASCII only (no CR/LF smuggled in by a callback), at most 1000."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:1000]).encode("ascii")


async def handle_inbound_request(state: State, provider_name: str, incoming: WebhookRequest) -> Answer:
    provider = state.registry.providers.get(provider_name)
    if provider is None:
        return error_answer(404, f"no provider named {provider_name!r} is enabled")
    context = state.registry.context
    texts = ReplyTexts.from_config(context.file_config, context.environ)

    def work() -> Answer:
        inbound = provider.parse_inbound(incoming)  # raises WebhookError (4xx) on a bad request
        outcome = handle_inbound(state.engine, provider.name, inbound, texts)
        try:
            if state.registry.listens("on_reply"):
                state.registry.pm.hook.on_reply(event=reply_received(outcome.reply, outcome.action))
        except Exception:
            log.exception("on_reply listener failed", reply_id=outcome.reply.id)
        response = provider.inbound_response(inbound, outcome.answer)
        return Answer(response.status_code, response.body, response.content_type)

    return await anyio.to_thread.run_sync(work)


HANDLERS: dict[str, Callable[[State, str, WebhookRequest], Awaitable[Answer]]] = {
    "status": handle_status,
    "inbound": handle_inbound_request,
}


async def _answer(
    kind: str, state: State, provider_name: str, build: Callable[[], Awaitable[WebhookRequest]]
) -> Answer:
    try:
        request = await build()
        if _has_nul(request.body):  # no column takes it (PostgreSQL's text refuses NUL)
            raise WebhookError(400, "the body holds a NUL character, which no provider sends")
        return await HANDLERS[kind](state, provider_name, request)
    except WebhookError as exc:
        return error_answer(exc.status_code, exc.detail)
    except (RecursionError, UnicodeDecodeError) as exc:  # a plugin's parser on a hostile body
        return error_answer(400, f"the body cannot be read: {type(exc).__name__}")


def _has_nul(body: bytes) -> bool:
    """A NUL byte, or one escaped for a form (%00) or JSON (\\u0000): three scans of at most 64 KB."""
    return b"\x00" in body or b"%00" in body or b"\\u0000" in body


async def _read_body(receive: Any, declared: str | None) -> bytes:
    if declared is not None:
        try:
            if int(declared) > MAX_WEBHOOK_BODY:
                raise WebhookError(413, f"the body is {int(declared)} bytes; webhooks take at most {MAX_WEBHOOK_BODY}")
        except ValueError:
            raise WebhookError(400, "the Content-Length header is not a number") from None
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise WebhookError(400, "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_WEBHOOK_BODY:
            raise WebhookError(413, f"the body is over {MAX_WEBHOOK_BODY} bytes, the most a webhook takes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def webhook_middleware(app: Any) -> Any:
    """Serve both webhook routes as raw ASGI (after Litestar's routing found them)."""

    async def webhook_app(scope: Any, receive: Any, send: Any) -> None:
        kind = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        if scope["type"] != "http" or kind not in HANDLERS:
            await app(scope, receive, send)
            return
        state = scope["litestar_app"].state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        async def build() -> WebhookRequest:
            body = await _read_body(receive, headers.get("content-length"))
            return make_webhook_request(
                state.settings.public_url,
                scope["path"],
                scope.get("query_string", b"").decode("latin-1"),
                headers,
                body,
            )

        answer = await _answer(kind, state, scope["path_params"]["provider_name"], build)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status_code,
                "headers": [
                    (b"content-type", answer.content_type.encode("latin-1")),
                    (b"content-length", str(len(answer.body)).encode()),
                    *answer.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})

    return webhook_app


async def _litestar_answer(
    kind: str, state: State, request: Request[Any, Any, Any], provider_name: str
) -> Response[Any]:
    async def build() -> WebhookRequest:
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = await _read_body(request.receive, headers.get("content-length"))
        return make_webhook_request(
            state.settings.public_url,
            request.url.path,
            request.scope.get("query_string", b"").decode("latin-1"),
            headers,
            body,
        )

    answer = await _answer(kind, state, provider_name, build)
    return Response(
        answer.body,
        status_code=answer.status_code,
        media_type=answer.content_type,
        headers={k.decode(): v.decode("latin-1") for k, v in answer.headers},
    )


class WebhookController(Controller):
    path = "/webhooks/{provider_name:str}"
    tags = ["webhooks"]
    request_max_body_size = MAX_WEBHOOK_BODY
    middleware = [webhook_middleware]

    @post("/status", operation_id="providerStatusCallback", status_code=200)
    async def status(self, state: State, request: Request[Any, Any, Any], provider_name: str) -> Response[Any]:
        """A delivery callback, verified and parsed by the provider plugin. Stored raw, applied if it
        moves the message forward (never backwards; duplicates change nothing); a callback for a
        message id not known yet is kept, applied once the send records that id, and answered 200 so
        the provider does not retry forever. Answers `{stored, applied, changed, unmatched,
        unmatched_ids}`; 403 for a bad signature, 400 for a malformed callback, 413 over 64 kB, 415
        for a content type the provider does not send. Nothing is stored for a refused callback."""
        return await _litestar_answer("status", state, request, provider_name)

    @post("/inbound", operation_id="providerInboundMessage", status_code=200)
    async def inbound(self, state: State, request: Request[Any, Any, Any], provider_name: str) -> Response[Any]:
        """An inbound SMS: stored as a reply of its contact (attributed to the contact's latest campaign
        message within 7 days); STOP/STOPALL/UNSUBSCRIBE/CANCEL/END/QUIT opt out, START/UNSTOP/YES opt
        in, HELP/INFO answer the help text. The answer is the provider's (Twilio: TwiML)."""
        return await _litestar_answer("inbound", state, request, provider_name)
