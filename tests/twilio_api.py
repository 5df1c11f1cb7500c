"""A local stand-in for Twilio's Messages API, for the tests: a real HTTP server on loopback.

It does what the tests rely on, the way Twilio documents it: `POST /2010-04-01/Accounts/{sid}/
Messages.json` (form, basic auth) answers 201 with the message resource, or Twilio's error JSON
(`{"code", "message", "more_info", "status"}`: 401/20003 bad credentials, 400/21211 invalid
number, 400/21610 unsubscribed recipient, 429/20429 with Retry-After); `GET .../Messages.json`
lists messages filtered by `To` and `DateSent>`; `GET .../Messages/{Sid}.json` answers one
message's resource with the final status it calls back (`delivered`, or `undelivered`/`failed`
with `error_code` and `error_message`, `date_updated` the time of that callback), 404/20404 for a
sid it never issued; and every accepted message's status callbacks (`sent`, then the final one)
are POSTed form-encoded to its StatusCallback, signed with X-Twilio-Signature by the official
`twilio` package's RequestValidator — unless `callbacks=False` (a gateway whose reports get
lost: only the resource tells). `fetch_failures` is a list of HTTP statuses (429, 503, …) the
next resource GETs answer with, one each, Retry-After 0. Simplification: a message's final status
is known at once; like Twilio's, a listed message has no `date_sent` while queued (so a lookup
filtered by `DateSent` misses it), and `DateSent>` filters by the time it was accepted.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "f" * 32
FROM_NUMBER = "+15005550006"


def signed_post(url: str, params: dict[str, str], auth_token: str = AUTH_TOKEN, **kwargs: Any) -> httpx.Response:
    """POST a form the way Twilio does, signed by Twilio's own RequestValidator."""
    signature = RequestValidator(auth_token).compute_signature(url, params)
    return httpx.post(url, data=params, headers={"x-twilio-signature": signature}, timeout=30, **kwargs)


def inbound_params(from_phone: str, body: str, to: str = FROM_NUMBER) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "Body": body,
        "From": from_phone,
        "MessageSid": "SM" + uuid.uuid4().hex,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "To": to,
    }


def _error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class TwilioStandIn:
    def __init__(
        self,
        *,
        invalid: Iterable[str] = (),
        unsubscribed: Iterable[str] = (),
        throttle_once: Iterable[str] = (),
        undelivered: Iterable[str] = (),
        slow: Iterable[str] = (),
        failing: Iterable[str] = (),
        slow_seconds: float = 2.0,
        unsubscribed_later: Iterable[str] = (),
        callbacks: bool = True,
        fetch_failures: Iterable[int] = (),
    ) -> None:
        self.invalid, self.unsubscribed = set(invalid), set(unsubscribed)
        # Accepted, then reported `failed` with 21610: the recipient unsubscribed at the carrier.
        self.unsubscribed_later = set(unsubscribed_later)
        self.callbacks = callbacks
        self.fetch_failures = list(fetch_failures)
        self.fetches: list[str] = []  # the sid of every GET of one message's resource, in order (refused ones too)
        self.throttle_once, self.undelivered, self.slow = set(throttle_once), set(undelivered), set(slow)
        self.failing = set(failing)
        self.slow_seconds = slow_seconds
        self.messages: list[dict[str, Any]] = []  # every accepted message, as Twilio would list it
        self.requests: list[dict[str, Any]] = []  # every POST to Messages.json: form, auth
        self.callback_answers: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = 0  # sends held at the closed gate right now
        self._throttled: set[str] = set()
        self._lock = threading.Lock()
        self._callbacks: queue.Queue[tuple[str, dict[str, str]] | None] = queue.Queue()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._post_callbacks, daemon=True),
        ]

    def __enter__(self) -> TwilioStandIn:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.gate.set()
        self._callbacks.put(None)
        self.server.shutdown()
        self.server.server_close()

    def sent_to(self, phone: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["to"] == phone]

    # -- the API -----------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
                if self.headers.get("authorization") != f"Basic {expected}":
                    self._answer(401, _error(20003, "Authenticate", 401))
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                parts = urlsplit(self.path)
                prefix = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/"
                if parts.path.startswith(prefix) and parts.path.endswith(".json"):
                    self._message(parts.path[len(prefix) : -len(".json")])
                    return
                if parts.path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
                    self._answer(404, _error(20404, "The requested resource was not found", 404))
                    return
                if not self._authorized():
                    return
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with standin._lock:
                    found = [
                        m
                        for m in reversed(standin.messages)
                        if ("To" not in query or m["to"] == query["To"])
                        and ("DateSent>" not in query or m["_date_sent"][:10] >= query["DateSent>"])
                    ]
                self._answer(
                    200,
                    {
                        "messages": [{k: v for k, v in m.items() if not k.startswith("_")} for m in found],
                        "next_page_uri": None,
                        "page": 0,
                        "page_size": 50,
                        "uri": parts.path,
                    },
                )

            def _message(self, sid: str) -> None:
                """GET Messages/{Sid}.json: the resource with the status it calls back last."""
                with standin._lock:
                    standin.fetches.append(sid)
                if not self._authorized():
                    return
                with standin._lock:
                    failure = standin.fetch_failures.pop(0) if standin.fetch_failures else None
                    message = next((m for m in standin.messages if m["sid"] == sid), None)
                if failure is not None:
                    self._answer(
                        failure, _error(20429 if failure == 429 else 20500, "Try again", failure), {"Retry-After": "0"}
                    )
                    return
                if message is None:
                    self._answer(404, _error(20404, f"The requested resource {self.path} was not found", 404))
                    return
                final = standin.final_status(message)
                self._answer(
                    200,
                    {
                        **{k: v for k, v in message.items() if not k.startswith("_")},
                        "status": final["MessageStatus"],
                        "error_code": int(final["ErrorCode"]) if "ErrorCode" in final else None,
                        "error_message": final.get("ErrorMessage"),
                        "date_updated": message["_date_final"],
                    },
                )

            def do_POST(self) -> None:  # noqa: N802
                if urlsplit(self.path).path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
                    self._answer(404, _error(20404, "The requested resource was not found", 404))
                    return
                form = dict(parse_qsl(self.rfile.read(int(self.headers.get("content-length") or 0)).decode()))
                with standin._lock:
                    standin.requests.append(
                        {
                            "form": form,
                            "authorization": self.headers.get("authorization"),
                            "content_type": self.headers.get("content-type"),
                        }
                    )
                if not self._authorized():
                    return
                if not standin.gate.is_set():
                    with standin._lock:
                        standin.waiting += 1
                    standin.gate.wait(60)
                    with standin._lock:
                        standin.waiting -= 1
                to = form.get("To", "")
                if to in standin.failing:
                    self._answer(503, _error(20500, "Service Unavailable", 503))
                    return
                if to in standin.invalid:
                    self._answer(400, _error(21211, f"The 'To' number {to} is not a valid phone number.", 400))
                    return
                if to in standin.unsubscribed:
                    self._answer(400, _error(21610, "Attempt to send to unsubscribed recipient", 400))
                    return
                with standin._lock:
                    throttle = to in standin.throttle_once and to not in standin._throttled
                    standin._throttled.add(to)
                if throttle:
                    self._answer(429, _error(20429, "Too Many Requests", 429), {"Retry-After": "1"})
                    return
                if not form.get("From") and not form.get("MessagingServiceSid"):
                    self._answer(400, _error(21603, "A 'From' phone number is required.", 400))
                    return
                now = datetime.now(UTC)
                message: dict[str, Any] = {
                    "sid": "SM" + uuid.uuid4().hex,
                    "account_sid": ACCOUNT_SID,
                    "to": to,
                    "from": form.get("From"),
                    "messaging_service_sid": form.get("MessagingServiceSid"),
                    "body": form.get("Body", ""),
                    "status": "queued",
                    "num_segments": "1",
                    "num_media": "0",
                    "direction": "outbound-api",
                    "api_version": "2010-04-01",
                    "price": None,
                    "price_unit": "USD",
                    "error_code": None,
                    "error_message": None,
                    "date_created": format_datetime(now),
                    "date_updated": format_datetime(now),
                    "date_sent": None,  # as at Twilio while the message is queued: set once it is sent
                    "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{{sid}}.json",
                    "_date_sent": now.isoformat(),
                    "_date_final": format_datetime(now + timedelta(seconds=1)),
                }
                message["uri"] = message["uri"].replace("{sid}", message["sid"])
                with standin._lock:
                    standin.messages.append(message)
                if form.get("StatusCallback") and standin.callbacks:
                    standin._schedule(form["StatusCallback"], message)
                if to in standin.slow:
                    time.sleep(standin.slow_seconds)  # accepted, but the answer comes too late
                self._answer(201, {k: v for k, v in message.items() if not k.startswith("_")})

        return Handler

    # -- status callbacks ------------------------------------------------------------------------
    def final_status(self, message: dict[str, Any]) -> dict[str, str]:
        """The last callback's status fields for this message (the resource shows the same)."""
        if message["to"] in self.unsubscribed_later:
            return {
                "MessageStatus": "failed",
                "SmsStatus": "failed",
                "ErrorCode": "21610",
                "ErrorMessage": "Attempt to send to unsubscribed recipient",
            }
        if message["to"] in self.undelivered:
            return {"MessageStatus": "undelivered", "SmsStatus": "undelivered", "ErrorCode": "30003"}
        return {"MessageStatus": "delivered", "SmsStatus": "delivered"}

    def _schedule(self, url: str, message: dict[str, Any]) -> None:
        base = {
            "AccountSid": ACCOUNT_SID,
            "ApiVersion": "2010-04-01",
            "From": message["from"] or FROM_NUMBER,
            "MessageSid": message["sid"],
            "SmsSid": message["sid"],
            "To": message["to"],
        }
        final = {k: v for k, v in self.final_status(message).items() if k != "ErrorMessage"}
        self._callbacks.put((url, {**base, "MessageStatus": "sent", "SmsStatus": "sent"}))
        self._callbacks.put((url, {**base, **final}))

    def _post_callbacks(self) -> None:
        client = httpx.Client(timeout=30)
        while True:
            item = self._callbacks.get()
            if item is None:
                client.close()
                return
            url, params = item
            time.sleep(0.02)  # after the send was answered, like the real thing
            signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
            for _ in range(50):
                try:
                    response = client.post(url, data=params, headers={"x-twilio-signature": signature})
                    self.callback_answers.append(response.status_code)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
