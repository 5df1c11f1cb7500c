"""Twilio's REST API as the Twilio provider (plugins/twilio.py) speaks it: the HTTP client part.

One `httpx.Client` per provider (basic auth, the request timeout), Twilio's words for a
message's status and its error texts, and the rule for answers worth another try in place:
429 and 5xx, waiting a `Retry-After` of up to `max_retry_wait`, at most `retries` more times.
A send (POST, not idempotent) is tried again in place only when Twilio says when, or on a 429;
a read (GET) also on a 5xx, with the same backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from textpulse import MessageStatus

DEFAULT_API_BASE = "https://api.twilio.com"

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


def error_text(code: str | None) -> str | None:
    if not code:
        return None
    return ERROR_TEXTS.get(code, f"Twilio error {code}")


def retry_after(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds (a number or an HTTP date); None when absent or unreadable."""
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


def is_transient(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def error_of(response: httpx.Response) -> tuple[str, str]:
    """Twilio's error code and message from an error answer (its JSON, else the HTTP status)."""
    try:
        data = response.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    code = str(data.get("code") or response.status_code)
    text = str(data.get("message") or error_text(code) or response.reason_phrase or "Twilio error")
    return code, text


def twilio_time(value: Any) -> datetime | None:
    """A time of Twilio's resources (RFC 2822, e.g. `Thu, 30 Jul 2015 20:12:31 +0000`), in UTC."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


class TwilioUnavailable(Exception):
    """Twilio answered 429 or 5xx (or could not be reached) after the retries in place."""


class TwilioRest:
    """The Messages resource of one account: `Messages.json` (create, list) and `Messages/{Sid}.json`."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_base: str = DEFAULT_API_BASE,
        *,
        timeout: float = 10,
        max_retry_wait: float = 5,
        retries: int = 3,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self.timeout = timeout
        self.max_retry_wait = max_retry_wait
        self.retries = retries
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def messages_url(self) -> str:
        return f"{self.api_base}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def message_url(self, sid: str) -> str:
        return f"{self.api_base}/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json"

    def client(self) -> httpx.Client:
        """Shared by the threads of a provider (httpx's client is thread-safe)."""
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    auth=(self.account_sid, self.auth_token),
                    timeout=self.timeout,
                    headers={"user-agent": "textpulse-twilio"},
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def wait_before_retry(self, response: httpx.Response, attempt: int, *, idempotent: bool) -> float | None:
        """Seconds to wait before trying again in place; None: give the answer back as it is."""
        if not is_transient(response) or attempt >= self.retries:
            return None
        wait = retry_after(response)
        if wait is None and (response.status_code == 429 or idempotent):
            wait = min(0.5 * 2**attempt, self.max_retry_wait)
        return wait if wait is not None and wait <= self.max_retry_wait else None

    def create_message(self, form: dict[str, str]) -> httpx.Response:
        """POST Messages.json; 429 (and a 5xx with Retry-After) tried again in place. httpx's errors
        propagate: the caller knows whether the request may have reached Twilio."""
        attempt = 0
        while True:
            response = self.client().post(self.messages_url, data=form)
            wait = self.wait_before_retry(response, attempt, idempotent=False)
            if wait is None:
                return response
            time.sleep(wait)
            attempt += 1

    def list_messages(self, params: dict[str, Any], *, max_pages: int = 20) -> Iterator[dict[str, Any]]:
        """GET Messages.json with these filters, page after page (raises on an error answer)."""
        url: str | None = self.messages_url
        query: dict[str, Any] | None = params
        for _ in range(max_pages):
            if url is None:
                return
            response = self._get(url, query)
            response.raise_for_status()
            page = response.json()
            yield from page.get("messages", [])
            next_uri = page.get("next_page_uri")
            url, query = (f"{self.api_base}{next_uri}", None) if next_uri else (None, None)

    def fetch_message(self, sid: str) -> dict[str, Any] | None:
        """GET Messages/{Sid}.json: the resource, or None when Twilio does not know the sid (404).
        Raises TwilioUnavailable for 429/5xx after the retries, or when Twilio cannot be reached;
        httpx.HTTPStatusError for any other error answer (401: wrong credentials, …)."""
        try:
            response = self._get(self.message_url(sid), None)
        except httpx.TransportError as exc:
            raise TwilioUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 404:
            return None
        if is_transient(response):
            code, text = error_of(response)
            raise TwilioUnavailable(f"{response.status_code} {code}: {text}")
        response.raise_for_status()
        data = response.json()
        return data if isinstance(data, dict) else None

    def _get(self, url: str, params: dict[str, Any] | None) -> httpx.Response:
        attempt = 0
        while True:
            response = self.client().get(url, params=params)
            wait = self.wait_before_retry(response, attempt, idempotent=True)
            if wait is None:
                return response
            time.sleep(wait)
            attempt += 1
