"""The Twilio provider: Programmable Messaging over its REST API, with signed webhooks.

Settings ([plugins.twilio] in plugins.toml, or TEXTPULSE_TWILIO_<SETTING>, which wins):
account_sid, auth_token, from_number or messaging_service_sid, api_base (an origin, default
https://api.twilio.com; tests point it at a local stand-in), timeout (seconds per request, 10),
max_retry_wait (the longest Retry-After honoured in place, 5 s), retries (3) and
fetch_concurrency (status lookups in flight at once, 4).

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

Delivery reports that never came: `fetch_status` GETs each message's resource
(`Messages/{Sid}.json`), a few at a time, and maps its `status`, `error_code` and `date_updated`
like a callback; a sid Twilio does not know (404) is left out, and so is the rest of the call once
Twilio stays at 429/5xx after the retries (a GET is also retried in place on a 5xx without
Retry-After), or refuses the credentials: they are asked again on the next look.

The HTTP client part (the client, retries, Twilio's status words and error texts) is
plugins/twilio_rest.py.

Webhooks: X-Twilio-Signature is checked against TEXTPULSE_PUBLIC_URL + path (+ query), the way
Twilio's own RequestValidator does it; a bad or missing one is a 403 and nothing is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit
from xml.sax.saxutils import escape

import httpx

from core.log import get_logger
from plugins.twilio_rest import (
    DEFAULT_API_BASE,
    ERROR_TEXTS,
    STATUSES,
    TwilioRest,
    TwilioUnavailable,
    error_of,
    error_text,
    twilio_time,
)
from textpulse import (
    InboundMessage,
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

__all__ = [  # what other modules and tests take from here, some of it defined in twilio_rest
    "DEFAULT_API_BASE",
    "EMPTY_TWIML",
    "ERROR_TEXTS",
    "PERMANENT_ERROR_CODES",
    "STATUSES",
    "UNSUBSCRIBED_ERROR_CODES",
    "TwilioProvider",
    "error_text",
    "signature_matches",
    "twilio_signature",
]

FORM = "application/x-www-form-urlencoded"
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# Refusals another attempt cannot fix (retry-failed leaves them alone): an invalid number, an
# unsubscribed recipient, a number that is not a mobile, an unknown handset, a landline.
PERMANENT_ERROR_CODES = frozenset({"21211", "21610", "21614", "30005", "30006"})
# The recipient replied STOP to this sender at Twilio: the contact is opted out here too.
UNSUBSCRIBED_ERROR_CODES = frozenset({"21610"})
# find_sent: a listed message created this long before the attempt's own time may still be its.
FIND_SENT_SKEW = timedelta(minutes=1)


def _created_at(item: dict[str, Any]) -> datetime | None:
    """A listed message's `date_created` (RFC 2822, as Twilio writes it), or None."""
    try:
        return parsedate_to_datetime(str(item["date_created"]))
    except (KeyError, TypeError, ValueError):
        return None


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
        self.fetch_concurrency = max(1, int(settings.get("fetch_concurrency", 4)))
        self.rest = TwilioRest(
            self.account_sid,
            self.auth_token,
            self.api_base,
            timeout=self.timeout,
            max_retry_wait=self.max_retry_wait,
            retries=self.retries,
        )

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
        return self.rest.messages_url

    def client(self) -> httpx.Client:
        return self.rest.client()

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
        try:
            response = self.rest.create_message(self._form(message))  # 429 etc. waited out there
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
        code, text = error_of(response)
        transient = response.status_code == 429 or response.status_code >= 500
        return SendResult(message.message_id, False, error_code=code, error_text=text, transient=transient)

    def find_sent(self, messages: list[OutgoingMessage]) -> dict[int, str]:
        """Messages Twilio already has: listed by To (newest first), matched by sender and body,
        created since the earlier attempt handed them over (a minute of clock skew allowed; a day
        when that time is unknown). Not by `DateSent`: Twilio sets it only once it has sent the
        message, and a message still queued at Twilio is exactly the one not to send again."""
        if not self.configured:
            return {}
        found: dict[int, str] = {}
        claimed: set[str] = set()
        for message in messages:
            attempted = message.attempted_at
            if attempted is not None and attempted.tzinfo is None:
                attempted = attempted.replace(tzinfo=UTC)
            since = (attempted - FIND_SENT_SKEW) if attempted else datetime.now(UTC) - timedelta(days=1)
            for item in self.rest.list_messages({"To": message.to, "PageSize": 50}, max_pages=4):
                created = _created_at(item)
                if created is not None and created < since:
                    break  # newest first: the rest is older still
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
        return found

    def fetch_status(self, provider_message_ids: Sequence[str]) -> list[StatusUpdate]:
        """Each message's resource as Twilio has it now, `fetch_concurrency` requests at a time, mapped
        like a callback. Left out: sids Twilio does not know (404), statuses that are no delivery
        report (`receiving`, …), and, once Twilio stays unavailable or refuses the credentials,
        every sid not asked yet (the next look asks again)."""
        if not self.configured or not provider_message_ids:
            return []
        stop = threading.Event()

        def one(sid: str) -> StatusUpdate | None:
            if stop.is_set():
                return None
            try:
                resource = self.rest.fetch_message(sid)
            except TwilioUnavailable as exc:
                if not stop.is_set():
                    log.warning("twilio status lookups stopped: Twilio is unavailable", error=str(exc), sid=sid)
                stop.set()
                return None
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                code, text = error_of(exc.response)
                if status in (401, 403):  # every other lookup would be refused the same way
                    if not stop.is_set():
                        log.error("twilio status lookups refused", status=status, code=code, error=text)
                    stop.set()
                else:
                    log.warning("twilio status lookup refused", sid=sid, status=status, code=code, error=text)
                return None
            return None if resource is None else self._update_of(sid, resource)

        ids = list(dict.fromkeys(provider_message_ids))  # each sid once, in order
        if self.fetch_concurrency == 1 or len(ids) == 1:
            found = [one(sid) for sid in ids]
        else:
            with ThreadPoolExecutor(min(self.fetch_concurrency, len(ids)), thread_name_prefix="twilio-fetch") as pool:
                found = list(pool.map(one, ids))
        return [update for update in found if update is not None]

    @staticmethod
    def _update_of(sid: str, resource: dict[str, Any]) -> StatusUpdate | None:
        """A Message resource (`status`, `error_code`, `error_message`, `date_updated`) as a status update."""
        status = STATUSES.get(str(resource.get("status") or "").strip().lower())
        if status is None:
            return None
        raw_code = resource.get("error_code")
        code = str(raw_code).strip() if raw_code not in (None, "") else None
        if code is not None and not code.isdigit():
            code = None
        text = str(resource.get("error_message") or "").strip() or error_text(code)
        return StatusUpdate(
            provider_message_id=str(resource.get("sid") or sid),
            status=status,
            error_code=code,
            error_text=text,
            occurred_at=twilio_time(resource.get("date_updated")),
        )

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
        self.rest.close()


@hookimpl
def register_providers(register: Callable[[Provider], None], config: PluginContext) -> None:
    register(TwilioProvider(config.plugin_settings("twilio")))
