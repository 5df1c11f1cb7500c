"""The Twilio provider: Programmable Messaging over its REST API, with signed webhooks.

Settings ([plugins.twilio] in plugins.toml, or TEXTPULSE_TWILIO_<SETTING>, which wins):
account_sid, auth_token, from_number or messaging_service_sid, api_base (an origin, default
https://api.twilio.com; tests point it at a local stand-in), timeout (seconds per request, 10),
max_retry_wait (the longest Retry-After honoured in place, 5 s) and retries (3).

Without account_sid, auth_token and a sender the provider is still registered (campaigns may
name it) but refuses every send with error `not_configured`, and without auth_token its
webhooks answer 403: nothing unsigned is ever believed.

Sending: one `POST {api_base}/2010-04-01/Accounts/{sid}/Messages.json` per message (form, basic
auth, StatusCallback = our /webhooks/twilio/status). A 4xx is final, with Twilio's code and
message (21211 invalid number, 21610 unsubscribed recipient — which opts the contact out, …).
429 and 5xx are transient: a Retry-After up to max_retry_wait is waited out here, anything
longer goes back to the send activity, which retries with backoff; the rest of the batch is not
tried meanwhile. A request that may have reached Twilio without our seeing the answer (a read
timeout, a dropped connection) is looked up with `find_sent` before it is called failed, so it
is never sent twice.

Webhooks: X-Twilio-Signature is checked against TEXTPULSE_PUBLIC_URL + path (+ query), the way
Twilio's own RequestValidator does it; a bad or missing one is a 403 and nothing is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit
from xml.sax.saxutils import escape

import httpx

from core.log import get_logger
from textpulse import (
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

log = get_logger("textpulse.twilio")

DEFAULT_API_BASE = "https://api.twilio.com"
FORM = "application/x-www-form-urlencoded"
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# Twilio's MessageStatus → ours. `receiving`/`received` belong to inbound messages, not callbacks.
STATUSES = {
    "accepted": MessageStatus.QUEUED,
    "scheduled": MessageStatus.QUEUED,
    "queued": MessageStatus.QUEUED,
    "sending": MessageStatus.SENDING,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.CANCELLED,
}

# Texts for the codes callbacks carry without a message (Twilio's error dictionary).
ERROR_TEXTS = {
    "20003": "Authentication error: check account_sid and auth_token",
    "20429": "Too many requests",
    "21211": "Invalid 'To' phone number",
    "21408": "Permission to send an SMS has not been enabled for the region of the 'To' number",
    "21610": "Attempt to send to unsubscribed recipient",
    "21612": "The 'To' phone number is not currently reachable via SMS",
    "21614": "'To' number is not a valid mobile number",
    "30001": "Queue overflow",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered by carrier",
    "30008": "Unknown error",
    "30034": "Message from an unregistered US A2P 10DLC number",
}

# Refusals another attempt cannot fix (retry-failed leaves them alone): an invalid number, an
# unsubscribed recipient, a number that is not a mobile, an unknown handset, a landline.
PERMANENT_ERROR_CODES = frozenset({"21211", "21610", "21614", "30005", "30006"})
# The recipient replied STOP to this sender at Twilio: the contact is opted out here too.
UNSUBSCRIBED_ERROR_CODES = frozenset({"21610"})


def error_text(code: str | None) -> str | None:
    if not code:
        return None
    return ERROR_TEXTS.get(code, f"Twilio error {code}")


# -- signatures ---------------------------------------------------------------------------------
def _grouped(params: Iterable[tuple[str, str]] | dict[str, str]) -> dict[str, set[str]]:
    pairs = params.items() if isinstance(params, dict) else params
    grouped: dict[str, set[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, set()).add(value)
    return grouped


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] | dict[str, str]) -> str:
    """Base64 HMAC-SHA1 of the URL followed by every POST parameter, name then value, sorted."""
    data = url
    for key, values in sorted(_grouped(params).items()):
        for value in sorted(values):
            data += key + value
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """The URL as called, with and without the scheme's default port (Twilio signs either)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        return [url, urlunsplit(parts._replace(netloc=host))]
    port = 443 if parts.scheme == "https" else 80
    return [url, urlunsplit(parts._replace(netloc=f"{host}:{port}"))]


def signature_matches(auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str) -> bool:
    pairs = list(params)
    return any(
        hmac.compare_digest(twilio_signature(auth_token, variant, pairs), signature) for variant in _url_variants(url)
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


class TwilioProvider:
    name = "twilio"
    reports_delivery = True
    permanent_error_codes = PERMANENT_ERROR_CODES
    unsubscribed_error_codes = UNSUBSCRIBED_ERROR_CODES

    def __init__(self, settings: dict[str, Any]) -> None:
        def text(key: str) -> str:
            value = settings.get(key)
            return "" if value is None else str(value).strip()

        self.account_sid = text("account_sid")
        self.auth_token = text("auth_token")
        self.from_number = text("from_number")
        self.messaging_service_sid = text("messaging_service_sid")
        self.api_base = (text("api_base") or DEFAULT_API_BASE).rstrip("/")
        self.timeout = float(settings.get("timeout", 10))
        self.max_retry_wait = float(settings.get("max_retry_wait", 5))
        self.retries = int(settings.get("retries", 3))
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    # -- configuration ---------------------------------------------------------------------
    def missing_settings(self) -> list[str]:
        missing = [key for key in ("account_sid", "auth_token") if not getattr(self, key)]
        if not self.from_number and not self.messaging_service_sid:
            missing.append("from_number or messaging_service_sid")
        return missing

    def check_config(self) -> list[str]:
        return [
            f"twilio: {key} is not set ([plugins.twilio] in plugins.toml or TEXTPULSE_TWILIO_<SETTING>)"
            for key in self.missing_settings()
        ]

    @property
    def configured(self) -> bool:
        return not self.missing_settings()

    @property
    def messages_url(self) -> str:
        return f"{self.api_base}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    auth=(self.account_sid, self.auth_token),
                    timeout=self.timeout,
                    headers={"user-agent": "textpulse-twilio"},
                )
            return self._client

    # -- sending ---------------------------------------------------------------------------
    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        if not self.configured:
            text = (
                "twilio is not configured: set "
                + ", ".join(self.missing_settings())
                + " in [plugins.twilio] of plugins.toml or as TEXTPULSE_TWILIO_<SETTING>"
            )
            log.error("twilio send refused", reason=text, messages=len(messages))
            return [SendResult(m.message_id, False, error_code="not_configured", error_text=text) for m in messages]
        results: list[SendResult] = []
        for message in messages:
            if results and results[-1].transient:
                # Rate limited or down: leave the rest to the activity's retry instead of hammering.
                last = results[-1]
                results.append(
                    SendResult(
                        message.message_id,
                        False,
                        error_code=last.error_code,
                        error_text=last.error_text,
                        transient=True,
                    )
                )
                continue
            results.append(self._send_one(message))
        return results

    def _form(self, message: OutgoingMessage) -> dict[str, str]:
        form = {"To": message.to, "Body": message.body, "StatusCallback": message.status_callback_url}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        else:
            form["From"] = self.from_number
        return form

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        for attempt in range(self.retries + 1):
            try:
                response = self.client().post(self.messages_url, data=self._form(message))
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Never reached Twilio: safe to try again later.
                return SendResult(
                    message.message_id,
                    False,
                    error_code="connection",
                    error_text=str(exc) or type(exc).__name__,
                    transient=True,
                )
            except httpx.HTTPError as exc:
                # It may have reached Twilio: ask before calling it unsent. If asking fails too, the
                # error propagates and the message stays `sending`: the retry asks again.
                found = self.find_sent([message])
                if message.message_id in found:
                    return SendResult(message.message_id, True, provider_message_id=found[message.message_id])
                return SendResult(
                    message.message_id,
                    False,
                    error_code="connection",
                    error_text=f"{type(exc).__name__}: {exc}",
                    transient=True,
                )
            if response.status_code in (200, 201):
                return SendResult(message.message_id, True, provider_message_id=str(response.json()["sid"]))
            code, text = self._error(response)
            if response.status_code == 429 or response.status_code >= 500:
                wait = _retry_after(response)
                if wait is None and response.status_code == 429:
                    wait = min(0.5 * 2**attempt, self.max_retry_wait)
                if wait is not None and wait <= self.max_retry_wait and attempt < self.retries:
                    time.sleep(wait)
                    continue
                return SendResult(message.message_id, False, error_code=code, error_text=text, transient=True)
            return SendResult(message.message_id, False, error_code=code, error_text=text)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns

    @staticmethod
    def _error(response: httpx.Response) -> tuple[str, str]:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        code = str(data.get("code") or response.status_code)
        text = str(data.get("message") or error_text(code) or response.reason_phrase or "Twilio error")
        return code, text

    def find_sent(self, messages: list[OutgoingMessage]) -> dict[int, str]:
        """Messages Twilio already has: listed by To and DateSent (since yesterday), matched by body."""
        if not self.configured:
            return {}
        since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        found: dict[int, str] = {}
        claimed: set[str] = set()
        for message in messages:
            url: str | None = self.messages_url
            params: dict[str, Any] | None = {"To": message.to, "DateSent>": since, "PageSize": 100}
            for _ in range(20):  # pages; a recipient gets few messages a day
                if url is None:
                    break
                response = self.client().get(url, params=params)
                response.raise_for_status()
                page = response.json()
                for item in page.get("messages", []):
                    sid = str(item.get("sid"))
                    mine = (
                        item.get("from") == self.from_number
                        if self.from_number and not self.messaging_service_sid
                        else True
                    )
                    if item.get("body") == message.body and mine and sid not in claimed:
                        found[message.message_id] = sid
                        claimed.add(sid)
                        break
                if message.message_id in found:
                    break
                next_uri = page.get("next_page_uri")
                url, params = (f"{self.api_base}{next_uri}", None) if next_uri else (None, None)
        return found

    # -- webhooks --------------------------------------------------------------------------
    def _verified_form(self, request: WebhookRequest) -> dict[str, str]:
        if not self.auth_token:
            raise WebhookError(
                403,
                "twilio webhooks are refused: no auth_token is configured "
                "([plugins.twilio] auth_token or TEXTPULSE_TWILIO_AUTH_TOKEN)",
            )
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            raise WebhookError(403, "the X-Twilio-Signature header is missing")
        is_form = request.content_type.split(";")[0].strip().lower() == FORM
        try:
            pairs = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True) if is_form else []
        except UnicodeDecodeError:
            pairs = []
        query = parse_qs(urlsplit(request.url).query)
        if "bodySHA256" in query:  # a JSON body: the URL is signed, the body by its hash
            pairs = []
            if not hmac.compare_digest(hashlib.sha256(request.body).hexdigest(), query["bodySHA256"][0]):
                raise WebhookError(403, "the body does not match its bodySHA256")
        if not signature_matches(self.auth_token, request.url, pairs, signature):
            raise WebhookError(
                403,
                "X-Twilio-Signature does not match: TEXTPULSE_PUBLIC_URL must be the base "
                "of the URL Twilio calls, and auth_token the account's",
            )
        if not is_form:
            raise WebhookError(415, f"expected {FORM}, got {request.content_type or 'no content type'}")
        return dict(pairs)

    @staticmethod
    def _field(form: dict[str, str], *names: str, allow_empty: bool = False) -> str:
        for name in names:
            value = form.get(name)
            if value is not None and (value.strip() or allow_empty):
                return value
        raise WebhookError(400, f"field '{names[0]}' is required")

    def parse_status(self, request: WebhookRequest) -> list[StatusUpdate]:
        form = self._verified_form(request)
        sid = self._field(form, "MessageSid", "SmsSid")
        twilio_status = self._field(form, "MessageStatus", "SmsStatus").strip().lower()
        status = STATUSES.get(twilio_status)
        if status is None:
            raise WebhookError(
                400, f"field 'MessageStatus' must be one of {', '.join(STATUSES)}, got {twilio_status!r}"
            )
        code = (form.get("ErrorCode") or "").strip() or None
        if code is not None and not code.isdigit():
            raise WebhookError(400, f"field 'ErrorCode' must be a number, got {code!r}")
        text = (form.get("ErrorMessage") or "").strip() or error_text(code)
        return [StatusUpdate(provider_message_id=sid, status=status, error_code=code, error_text=text)]

    def parse_inbound(self, request: WebhookRequest) -> InboundMessage:
        form = self._verified_form(request)
        return InboundMessage(
            from_phone=self._field(form, "From"),
            to=self._field(form, "To"),
            body=self._field(form, "Body", allow_empty=True),
            provider_message_id=form.get("MessageSid") or form.get("SmsMessageSid") or None,
        )

    def inbound_response(self, inbound: InboundMessage, answer: str | None) -> WebhookResponse:
        if not answer:
            return WebhookResponse(200, EMPTY_TWIML, "text/xml")
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(answer)}</Message></Response>'
        ).encode()
        return WebhookResponse(200, body, "text/xml")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


@hookimpl
def register_providers(register: Callable[[Provider], None], config: PluginContext) -> None:
    register(TwilioProvider(config.plugin_settings("twilio")))
