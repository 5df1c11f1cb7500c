"""The simulated provider `fake`: accepts every send and posts delivery callbacks over HTTP.

It behaves like a real gateway so that the whole path is exercised: callbacks go to the
message's status callback URL (our `/webhooks/fake/status`) after a random delay, a share
of them fail with carrier-like error codes, and every accepted send is written to a ledger
(JSON lines in the data dir) that proves nobody got a message twice.

The outcome of a send is decided when it is accepted, and the ledger entry records it with the
times its callbacks fall due (`planned`): the callbacks themselves are posted by a thread of
the process that sent, and die with it, but any process reading the ledger (the worker's, the
API's, one started later) answers `fetch_status` from that record, as a gateway's API would.

Settings ([plugins.fake] or TEXTPULSE_FAKE_*): delivery_ratio (0.95), fail_codes
(["30003","30005","30006","30007"]), callback_delay_seconds ([0.05, 2.0]), seed (none), callbacks
(true; false: no callbacks are posted, `fetch_status` still answers from the ledger, as bench/send.py
sends: a gateway that takes 5,000 messages a second is not one whose callbacks are measured there).
Its codes are Twilio's, and so are its `permanent_error_codes` (retry-failed skips 30005, 30006, …).
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from core.log import get_logger
from plugins.twilio import PERMANENT_ERROR_CODES as TWILIO_PERMANENT_ERROR_CODES
from textpulse import (
    MESSAGE_STATUSES,
    InboundMessage,
    MessageStatus,
    OutgoingMessage,
    PluginContext,
    Provider,
    SendResult,
    StatusUpdate,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
    hookimpl,
)

log = get_logger("textpulse.fake")
_dumps = json.JSONEncoder(ensure_ascii=True, check_circular=False).encode  # json.dumps's, set up once

ERROR_TEXTS = {
    "30003": "Unreachable destination handset",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered by carrier",
}
# It fails like Twilio, so Twilio's permanent codes are its own: retry-failed leaves those alone.
PERMANENT_ERROR_CODES = TWILIO_PERMANENT_ERROR_CODES


def _json_object(request: WebhookRequest) -> dict[str, Any]:
    if "json" not in request.content_type:
        raise WebhookError(415, f"expected application/json, got {request.content_type or 'no content type'}")
    try:
        data = json.loads(request.body)
    except ValueError as exc:
        raise WebhookError(400, f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WebhookError(400, "body must be a JSON object")
    return data


def _string_field(data: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise WebhookError(400, f"field '{name}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise WebhookError(400, f"field '{name}' must be a string")
    return str(value)


class CallbackDispatcher:
    """A daemon thread that posts scheduled callbacks when they fall due."""

    def __init__(self) -> None:
        self._queue: list[tuple[float, int, str, dict[str, Any]]] = []
        self._counter = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=10)

    def schedule(self, due: float, url: str, payload: dict[str, Any]) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fake-callbacks", daemon=True)
                self._thread.start()
            self._counter += 1
            heapq.heappush(self._queue, (due, self._counter, url, payload))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._queue or self._queue[0][0] > time.monotonic()):
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, url, payload = heapq.heappop(self._queue)
            self._post(url, payload)

    def _post(self, url: str, payload: dict[str, Any]) -> None:
        for attempt in range(5):
            if self._stopped:
                return
            try:
                response = self._client.post(url, json=payload)
                if response.status_code < 500:
                    if response.status_code >= 400:
                        log.warning("fake callback refused", status=response.status_code, body=response.text)
                    return
            except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: closed while stopping
                log.debug("fake callback failed", error=str(exc), attempt=attempt)
            time.sleep(0.2 * 2**attempt)
        log.warning("fake callback dropped", url=url, payload=payload)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._client.close()


class FakeProvider:
    name = "fake"
    reports_delivery = True
    permanent_error_codes = PERMANENT_ERROR_CODES

    def __init__(self, settings: dict[str, Any], ledger_path: Path) -> None:
        self.delivery_ratio = float(settings.get("delivery_ratio", 0.95))
        self.fail_codes = [str(code) for code in settings.get("fail_codes", list(ERROR_TEXTS))]
        delay = settings.get("callback_delay_seconds", [0.05, 2.0])
        self.delay = (float(delay[0]), float(delay[1])) if isinstance(delay, list) else (float(delay),) * 2
        self.random = random.Random(settings.get("seed"))
        # Provider ids: a random prefix per instance and a counter (a uuid4 each was 3 % of a send's
        # CPU: a syscall and an object per message), 32 hex digits as before, unique across
        # processes and restarts; not drawn from `random`, whose draws a seed reproduces.
        self._id_prefix = secrets.token_hex(11)
        self._ids = itertools.count()
        self.post_callbacks = str(settings.get("callbacks", True)).lower() not in ("false", "0", "no", "off")
        self.ledger_path = ledger_path
        self._ledger_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._index: dict[str, tuple[str, str | None, str | None, float, float]] = {}
        self._index_offset = 0
        self.dispatcher = CallbackDispatcher()

    # -- sending -------------------------------------------------------------------------
    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        entries: list[str] = []
        callbacks: list[tuple[float, str, dict[str, Any]]] = []
        now = time.monotonic()
        wall = time.time()  # the ledger's due times: other processes read them, so not monotonic
        accepted_at = datetime.fromtimestamp(wall, UTC).isoformat()
        for message in messages:
            provider_id = f"fake-{self._id_prefix}{next(self._ids):010x}"
            results.append(SendResult(message.message_id, True, provider_message_id=provider_id))
            # The draws, in this order, are what a seed reproduces: keep it.
            first_delay = self.random.uniform(*self.delay)
            final: dict[str, Any] = {"message_id": provider_id, "status": MessageStatus.DELIVERED}
            if self.random.random() >= self.delivery_ratio and self.fail_codes:
                code = self.random.choice(self.fail_codes)
                final = {
                    "message_id": provider_id,
                    "status": self.random.choice([MessageStatus.FAILED, MessageStatus.UNDELIVERED]),
                    "error_code": code,
                    "error_text": ERROR_TEXTS.get(code, "Carrier error"),
                }
            final_delay = first_delay + self.random.uniform(*self.delay)
            entries.append(
                _dumps(
                    {
                        "provider_message_id": provider_id,
                        "to": message.to,
                        "body": message.body,
                        "idempotency_key": message.idempotency_key,
                        "message_id": message.message_id,
                        "accepted_at": accepted_at,
                        "planned": {
                            "status": final["status"],
                            "error_code": final.get("error_code"),
                            "error_text": final.get("error_text"),
                            "sent_due": wall + first_delay,  # epoch seconds of the `sent` callback
                            "final_due": wall + final_delay,  # and of the final one
                        },
                    }
                )
            )
            if self.post_callbacks:
                url = message.status_callback_url
                callbacks.append((now + first_delay, url, {"message_id": provider_id, "status": MessageStatus.SENT}))
                callbacks.append((now + final_delay, url, final))
        with self._ledger_lock:
            self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
            with self.ledger_path.open("a", encoding="utf-8") as fh:
                fh.write("".join(entry + "\n" for entry in entries))
        # Scheduled once the ledger has the sends: a callback never comes for a send not recorded.
        for due, url, payload in callbacks:
            self.dispatcher.schedule(due, url, payload)
        return results

    def fetch_status(self, provider_message_ids: Sequence[str]) -> list[StatusUpdate]:
        """What the gateway knows now, from the ledger (any process's sends): the planned final
        status once its callback time has passed, `sent` once the first callback's has, and
        nothing for an id it never accepted (or whose first callback is not due yet)."""
        planned = self._planned()
        now = time.time()
        updates: list[StatusUpdate] = []
        for provider_id in provider_message_ids:
            plan = planned.get(provider_id)
            if plan is None:
                continue
            status, code, text, sent_due, final_due = plan
            if now >= final_due:
                updates.append(StatusUpdate(provider_id, status, code, text, datetime.fromtimestamp(final_due, UTC)))
            elif now >= sent_due:
                updates.append(
                    StatusUpdate(provider_id, MessageStatus.SENT, occurred_at=datetime.fromtimestamp(sent_due, UTC))
                )
        return updates

    def _planned(self) -> dict[str, tuple[str, str | None, str | None, float, float]]:
        """provider id → (final status, error code, error text, sent due, final due), read from the
        ledger incrementally: lines appended since the last look, by any process."""
        with self._index_lock:
            try:
                size = self.ledger_path.stat().st_size
            except FileNotFoundError:
                return self._index
            if size < self._index_offset:  # the file was replaced: read it again
                self._index, self._index_offset = {}, 0
            if size == self._index_offset:
                return self._index
            with self.ledger_path.open("rb") as fh:
                fh.seek(self._index_offset)
                chunk = fh.read(size - self._index_offset)
            complete = chunk.rfind(b"\n") + 1  # a line still being written waits for the next look
            for line in chunk[:complete].splitlines():
                if not line.strip():
                    continue
                entry = json.loads(line)
                plan = entry.get("planned")
                if plan is None:  # written before outcomes were planned: nothing to tell
                    continue
                code, text = plan.get("error_code"), plan.get("error_text")
                self._index[str(entry["provider_message_id"])] = (
                    sys.intern(str(plan["status"])),  # a handful of distinct values: kept once each
                    None if code is None else sys.intern(str(code)),
                    None if text is None else sys.intern(str(text)),
                    float(plan["sent_due"]),
                    float(plan["final_due"]),
                )
            self._index_offset += complete
            return self._index

    def find_sent(self, messages: list[OutgoingMessage]) -> dict[int, str]:
        """Which of these did we accept already? (An attempt whose answer was lost.)"""
        by_key = {entry["idempotency_key"]: entry["provider_message_id"] for entry in self.ledger()}
        return {m.message_id: by_key[m.idempotency_key] for m in messages if m.idempotency_key in by_key}

    def ledger(self) -> list[dict[str, Any]]:
        """Every send this provider accepted (across restarts: it is a file). A line another
        process is writing still (no newline yet) is not one yet."""
        if not self.ledger_path.exists():
            return []
        with self.ledger_path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.endswith("\n") and line.strip()]

    # -- webhooks ------------------------------------------------------------------------
    def parse_status(self, request: WebhookRequest) -> list[StatusUpdate]:
        data = _json_object(request)
        provider_id = _string_field(data, "message_id")
        status = _string_field(data, "status")
        if status not in MESSAGE_STATUSES:
            raise WebhookError(400, f"field 'status' must be one of {', '.join(MESSAGE_STATUSES)}, got {status!r}")
        occurred_at = None
        timestamp = _string_field(data, "timestamp", required=False)
        if timestamp:
            try:
                occurred_at = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
            except ValueError as exc:
                raise WebhookError(400, f"field 'timestamp' is not an ISO 8601 time: {timestamp!r}") from exc
            occurred_at = occurred_at.astimezone(UTC) if occurred_at.tzinfo else occurred_at.replace(tzinfo=UTC)
        return [
            StatusUpdate(
                provider_message_id=str(provider_id),
                status=str(status),
                error_code=_string_field(data, "error_code", required=False),
                error_text=_string_field(data, "error_text", required=False),
                occurred_at=occurred_at,
            )
        ]

    def parse_inbound(self, request: WebhookRequest) -> InboundMessage:
        data = _json_object(request)
        return InboundMessage(
            from_phone=str(_string_field(data, "from")),
            to=str(_string_field(data, "to")),
            body=str(_string_field(data, "body")),
            provider_message_id=_string_field(data, "message_id", required=False),
        )

    def inbound_response(self, inbound: InboundMessage, answer: str | None) -> WebhookResponse:
        return WebhookResponse(200, json.dumps({"reply": answer}).encode(), "application/json")

    def close(self) -> None:
        self.dispatcher.close()


@hookimpl
def register_providers(register: Callable[[Provider], None], config: PluginContext) -> None:
    register(FakeProvider(config.plugin_settings("fake"), config.settings.data_dir / "fake_ledger.jsonl"))
