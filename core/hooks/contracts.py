"""What a provider plugin exchanges with Textpulse: plain dataclasses, no framework types.

A provider is an object with a `name` and the methods of `Provider`; it is handed over by the
`register_providers` hook. Methods are synchronous: the send activity runs them in a worker
thread, the webhook routes in the API's thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

# Status names a provider may report; anything else is a 400 at the webhook.
MESSAGE_STATUSES = ("queued", "sending", "sent", "delivered", "undelivered", "failed", "cancelled")


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: int
    to: str
    body: str
    idempotency_key: str
    status_callback_url: str


@dataclass(frozen=True)
class SendResult:
    """The provider's answer for one message: accepted with an id, or rejected with a code."""

    message_id: int
    accepted: bool
    provider_message_id: str | None = None
    error_code: str | None = None
    error_text: str | None = None
    transient: bool = False  # worth retrying (timeout, 429, 5xx); a final rejection is False


@dataclass(frozen=True)
class StatusUpdate:
    provider_message_id: str
    status: str
    error_code: str | None = None
    error_text: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class InboundMessage:
    from_phone: str
    to: str
    body: str
    provider_message_id: str | None = None


@dataclass(frozen=True)
class WebhookRequest:
    """An incoming provider request, as the provider needs it to verify a signature."""

    url: str  # the public URL (TEXTPULSE_PUBLIC_URL + path + query) the provider called
    headers: dict[str, str]  # lower-cased names
    body: bytes
    content_type: str
    form: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookResponse:
    status_code: int = 200
    body: bytes = b""
    content_type: str = "text/plain"


class WebhookError(Exception):
    """Raised by a provider for a request it refuses; becomes a 4xx with this detail."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@runtime_checkable
class Provider(Protocol):
    name: str
    reports_delivery: bool

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]: ...

    def parse_status(self, request: WebhookRequest) -> list[StatusUpdate]: ...

    def parse_inbound(self, request: WebhookRequest) -> InboundMessage: ...

    def inbound_response(self, inbound: InboundMessage, answer: str | None) -> WebhookResponse: ...

    def close(self) -> None: ...
