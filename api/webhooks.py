"""/webhooks/{provider}/status and /inbound: provider callbacks, parsed and verified by the plugin.

The provider plugin sees the public URL the provider called (for signatures), the headers and
the raw body, and refuses what it cannot verify or read: a 4xx with its reason, nothing stored.
Here: a body over 64 kB is a 413, one without a content type a 415, an unknown provider a 404.

Status callbacks are the hot path (a campaign of a million messages brings two or three million
of them), so the routes are served by `WebhookApp`, a raw ASGI app like /r, run by the
controller's middleware: the controller still declares both routes (OpenAPI, routing), and its
handlers do the same work through Litestar if the middleware is ever taken away. Concurrent
status callbacks are written together (`StatusWriter`: one transaction for all that arrived
while the previous one was written) and each is answered only after its transaction committed,
so an answered callback is a stored one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from sqlalchemy.engine import Engine

from core.delivery.replies import ReplyTexts, handle_inbound
from core.delivery.status import Callback, IngestOutcome, ingest_callbacks
from core.hooks.contracts import MESSAGE_STATUSES, StatusUpdate, WebhookError, WebhookRequest
from core.log import get_logger

log = get_logger("textpulse.webhooks")

MAX_WEBHOOK_BODY = 64_000
MAX_BATCH = 500


class StoreFailed(Exception):
    """The database refused a batch of callbacks several times; the provider should retry."""


@dataclass
class _Pending:
    provider: Any
    request: WebhookRequest
    future: asyncio.Future[IngestOutcome]
    callback: Callback | None = None


class StatusWriter:
    """Group commit for status callbacks: each waits for the transaction that stored it.

    Callbacks that arrive while a batch is being written form the next batch: one thread hop
    parses them all (the provider's `parse_status`, which may block) and stores them in one
    transaction. A callback the provider refuses fails alone, with its 4xx.
    """

    def __init__(
        self, engine: Engine, on_change: Callable[[int, str, str], None] | None = None, max_batch: int = MAX_BATCH
    ) -> None:
        self.engine = engine
        self.on_change = on_change
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        # One thread: batches are written one after the other, and a hop costs less than anyio's.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-writer")

    async def submit(self, provider: Any, request: WebhookRequest) -> IngestOutcome:
        loop = asyncio.get_running_loop()
        item = _Pending(provider, request, loop.create_future())
        self._pending.append(item)
        if self._task is None:  # the drain task runs only while there is work
            self._task = loop.create_task(self._drain(), name="status-writer")
        return await item.future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                await self._write(batch)
        finally:
            self._task = None

    def _parse(self, batch: list[_Pending]) -> list[_Pending]:
        """Parse in the worker thread; answers refused ones at once (thread-safe), returns the rest."""
        parsed: list[_Pending] = []
        for item in batch:
            try:
                updates = _checked(item.provider.parse_status(item.request), item.provider.name)
            except Exception as exc:
                item.future.get_loop().call_soon_threadsafe(_settle, item.future, None, exc)
                continue
            raw = {"content_type": item.request.content_type, "body": item.request.body.decode("utf-8", "replace")}
            item.callback = Callback(item.provider.name, updates, raw)
            parsed.append(item)
        return parsed

    def _parse_and_store(self, batch: list[_Pending]) -> tuple[list[_Pending], list[IngestOutcome] | Exception]:
        parsed = self._parse(batch)
        try:
            return parsed, ingest_callbacks(
                self.engine, [i.callback for i in parsed if i.callback], on_change=self.on_change
            )
        except Exception as exc:  # a locked, restarting or deadlocked database: the batch rolled back
            return parsed, exc

    async def _write(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        parsed, result = await loop.run_in_executor(self._thread, self._parse_and_store, batch)
        for attempt in range(1, 4):
            if not isinstance(result, Exception):
                break
            log.warning("status callbacks not stored, retrying", error=str(result), attempt=attempt, size=len(parsed))
            await asyncio.sleep(0.05 * 2**attempt)
            result = await loop.run_in_executor(self._thread, self._store, parsed)
        if isinstance(result, Exception):
            if len(parsed) > 1:  # keep one bad callback from failing the others
                for item in parsed:
                    single = await loop.run_in_executor(self._thread, self._store, [item])
                    _settle(
                        item.future,
                        None if isinstance(single, Exception) else single[0],
                        StoreFailed(f"the callback could not be stored: {single}")
                        if isinstance(single, Exception)
                        else None,
                    )
                return
            log.error("status callback not stored", error=str(result))
            for item in parsed:
                _settle(item.future, None, StoreFailed(f"the callback could not be stored: {result}"))
            return
        for item, outcome in zip(parsed, result, strict=True):
            _settle(item.future, outcome, None)

    def _store(self, items: list[_Pending]) -> list[IngestOutcome] | Exception:
        try:
            return ingest_callbacks(self.engine, [i.callback for i in items if i.callback], on_change=self.on_change)
        except Exception as exc:
            return exc


def _settle(future: asyncio.Future[IngestOutcome], outcome: IngestOutcome | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outcome)  # type: ignore[arg-type]


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


def _checked(updates: Any, provider: str) -> list[StatusUpdate]:
    """What the plugin parsed must fit our columns; a request that does not is refused whole."""
    if not isinstance(updates, list | tuple) or not all(isinstance(u, StatusUpdate) for u in updates):
        raise TypeError(f"provider {provider!r}: parse_status must return a list of StatusUpdate")
    for upd in updates:
        if not isinstance(upd.provider_message_id, str) or not upd.provider_message_id.strip():
            raise WebhookError(400, "the message id is missing or empty")
        if len(upd.provider_message_id) > 100:
            raise WebhookError(400, f"the message id is longer than 100 characters: {upd.provider_message_id[:40]!r}…")
        if upd.status not in MESSAGE_STATUSES:
            raise WebhookError(400, f"status must be one of {', '.join(MESSAGE_STATUSES)}, got {upd.status!r}")
        if upd.error_code is not None and len(str(upd.error_code)) > 40:
            raise WebhookError(400, "the error code is longer than 40 characters")
    return list(updates)


def _state_writer(state: State) -> StatusWriter:
    writer = state.get("status_writer")
    if writer is None:
        registry = state.registry

        def on_change(message_id: int, old: str, new: str) -> None:
            registry.pm.hook.on_message_status(message=message_id, old_status=old, new_status=new)

        writer = StatusWriter(state.engine, on_change)
        state.status_writer = writer
    return writer


async def handle_status(state: State, provider_name: str, incoming: WebhookRequest) -> Answer:
    provider = state.registry.providers.get(provider_name)
    if provider is None:
        return error_answer(404, f"no provider named {provider_name!r} is enabled")
    try:
        outcome = await _state_writer(state).submit(provider, incoming)  # parsed (4xx) and stored there
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
            state.registry.pm.hook.on_reply(reply=outcome.reply)
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
        return await HANDLERS[kind](state, provider_name, await build())
    except WebhookError as exc:
        return error_answer(exc.status_code, exc.detail)


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
