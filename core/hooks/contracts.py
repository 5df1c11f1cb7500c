"""What plugins exchange with Textpulse: plain dataclasses and `typing.Protocol`s, no framework types.

A provider is an object with the members of `Provider`, handed over by the `register_providers`
hook; each optional ability (looking up lost sends, reporting delivery, naming error codes,
closing, fetching a status, checking its configuration) is a protocol of its own, asked for by
`core.hooks.abilities` and nowhere else. Provider methods are synchronous: the send activity
runs them in a worker thread, the webhook routes in the API's thread pool.

The `on_*` hooks each receive one frozen dataclass (`MessageStatusChanged`, `ClickRecorded`,
`ReplyReceived`, `ConversionRecorded`) as `event`. This module imports the standard library
only, so `import textpulse` stays light.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from core.statuses import MessageStatus

# Status names a provider may report; anything else is a 400 at the webhook.
MESSAGE_STATUSES: tuple[str, ...] = tuple(MessageStatus)


# -- messages and webhooks ------------------------------------------------------------------
@dataclass(frozen=True)
class OutgoingMessage:
    """One text to send: our id, the E.164 number, the rendered body (tracked links in it)."""

    message_id: int
    to: str
    body: str
    idempotency_key: str  # stable across retries: send it where the gateway takes one
    status_callback_url: str  # the public URL of /webhooks/<provider>/status
    # find_sent only: when an earlier attempt handed it over (None: unknown); a gateway's
    # message created before this is not that attempt's.
    attempted_at: datetime | None = None


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
    """A delivery report: `status` is one of MESSAGE_STATUSES."""

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


# -- providers --------------------------------------------------------------------------------
@runtime_checkable
class Provider(Protocol):
    """What every provider has. `name` is what campaigns say in "provider" and what the webhook
    routes /webhooks/{name}/status and /webhooks/{name}/inbound dispatch on."""

    name: str

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """One `SendResult` per message, in order."""
        ...

    def parse_status(self, request: WebhookRequest) -> list[StatusUpdate]:
        """Verify and parse a delivery report; raise `WebhookError` to refuse it."""
        ...

    def parse_inbound(self, request: WebhookRequest) -> InboundMessage:
        """Verify and parse a message from a phone; raise `WebhookError` to refuse it."""
        ...

    def inbound_response(self, inbound: InboundMessage, answer: str | None) -> WebhookResponse:
        """What the gateway expects back for an inbound message (`answer`: text to send, or None)."""
        ...


@runtime_checkable
class FindsSent(Protocol):
    """Looks up sends whose outcome is unknown (the worker died before the answer was recorded)."""

    def find_sent(self, messages: list[OutgoingMessage]) -> dict[int, str]:
        """{message_id: provider_message_id} of those the gateway has; the others are sent again."""
        ...


@runtime_checkable
class ReportsDelivery(Protocol):
    """Says whether delivery reports come (CTR is over delivered, else over sent); default True."""

    reports_delivery: bool


@runtime_checkable
class NamesPermanentErrors(Protocol):
    """Error codes that another attempt cannot fix: retry-failed leaves such messages alone."""

    permanent_error_codes: Collection[str]


@runtime_checkable
class NamesUnsubscribedErrors(Protocol):
    """Error codes meaning the recipient unsubscribed at the gateway: the contact is opted out."""

    unsubscribed_error_codes: Collection[str]


@runtime_checkable
class Closes(Protocol):
    """Releases clients and threads when the process stops."""

    def close(self) -> None: ...


@runtime_checkable
class FetchesStatus(Protocol):
    """Looks up messages' statuses at the gateway, for delivery reports that never came."""

    def fetch_status(self, provider_message_ids: Sequence[str]) -> list[StatusUpdate]:
        """An update for each id the gateway knows; ids it does not know are left out."""
        ...


@runtime_checkable
class ChecksConfig(Protocol):
    """Says what is wrong with its settings, before a campaign is sent through it."""

    def check_config(self) -> list[str]:
        """One sentence per problem (a missing secret, a bad URL); empty when it can send."""
        ...


# -- shorteners and bot filters --------------------------------------------------------------
# The rule every shortener's codes follow (API.md; the column holds 32): base62, 7 to 32 characters.
_WELLFORMED_CODE = re.compile(r"[0-9A-Za-z]{7,32}")


def is_wellformed_code(code: str) -> bool:
    """Could `code` be a short code at all, of any shortener?"""
    return _WELLFORMED_CODE.fullmatch(code) is not None


@runtime_checkable
class Shortener(Protocol):
    """Makes the tracked URL of each (message, link); `GET /r/{code}` resolves its codes."""

    def new_code(self) -> str:
        """A fresh random code (a collision with a stored one is redrawn by the caller)."""
        ...

    def tracked_url(self, code: str, public_url: str) -> str:
        """The URL put in the text for `code`."""
        ...

    def is_code(self, code: str) -> bool:
        """Could `code` be one of this shortener's? Anything else is a 404 without a lookup."""
        ...


class ClickTarget(Protocol):
    """What a short code resolves to, fixed at send time."""

    @property
    def code(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def message_id(self) -> int: ...
    @property
    def link_id(self) -> int: ...
    @property
    def contact_id(self) -> int | None: ...  # None: a test send to a phone that is no contact
    @property
    def campaign_id(self) -> int: ...


class ClickToJudge(Protocol):
    """A click as a bot filter sees it (the redirect's record, before it is stored)."""

    @property
    def target(self) -> ClickTarget: ...
    @property
    def clicked_at(self) -> datetime: ...
    @property
    def ip(self) -> str | None: ...
    @property
    def user_agent(self) -> str | None: ...
    @property
    def referer(self) -> str | None: ...
    @property
    def probe(self) -> bool: ...  # a HEAD request
    @property
    def sent_at(self) -> datetime | None: ...  # filled in for filters that need message times
    @property
    def delivered_at(self) -> datetime | None: ...
    @property
    def purpose(self) -> str | None: ...  # a `Purpose` / `Sec-Purpose` / `X-Moz` / `X-Purpose` header


@runtime_checkable
class BotFilter(Protocol):
    """Judges each click as it is stored; a click with a reason is a machine's."""

    name: str

    def judge(self, click: ClickToJudge) -> tuple[float, str | None]:
        """A score in 0..1 and the reason shown with the click (None: a person, as far as it knows)."""
        ...


@runtime_checkable
class NeedsMessageTimes(Protocol):
    """A bot filter that reads `click.sent_at` / `click.delivered_at` (they cost a lookup)."""

    needs_message_times: bool


class JudgedClick(ClickToJudge, Protocol):
    """A click as a `JudgesTogether` filter sees it: judged already by the per-click filters."""

    @property
    def reasons(self) -> tuple[str, ...]: ...  # every reason given so far (none: a person's, so far)


@runtime_checkable
class JudgesTogether(Protocol):
    """A bot filter whose verdicts need more than one click (a burst from one network, every link of
    a message): the click writer gives it each batch with the clicks stored in the last `window`
    seconds, and re-judges those too (their rows are updated when it adds a reason)."""

    name: str
    window: float  # seconds of earlier clicks it needs to see (`recent`)

    def judge_together(
        self, clicks: Sequence[JudgedClick], recent: Sequence[JudgedClick]
    ) -> list[tuple[float, str | None]]:
        """One (score, reason | None) per click of `recent` then one per click of `clicks`, both
        oldest first; a reason is added to that click's, a None takes none away."""
        ...


# -- the payloads of the on_* hooks ----------------------------------------------------------
@dataclass(frozen=True)
class MessageStatusChanged:
    """A message's delivery status moved forward (never for a duplicate or a step back)."""

    message_id: int
    campaign_id: int
    contact_id: int | None  # None: a test send to a phone that is no contact
    phone: str
    provider: str
    provider_message_id: str | None
    old_status: str
    new_status: str
    error_code: str | None = None
    error_text: str | None = None
    changed_at: datetime | None = None


@dataclass(frozen=True)
class ClickRecorded:
    """A click on a tracked link was stored; bots' clicks too, flagged with their reasons."""

    code: str
    campaign_id: int
    message_id: int
    link_id: int
    contact_id: int | None  # None: a test send to a phone that is no contact
    clicked_at: datetime
    ip: str | None
    user_agent: str | None
    referer: str | None
    os: str | None
    device: str | None
    is_bot: bool
    bot_score: float
    bot_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplyReceived:
    """A message from a phone was stored, attributed where it could be."""

    reply_id: int
    phone: str
    body: str
    provider: str
    received_at: datetime
    contact_id: int | None = None
    campaign_id: int | None = None  # the contact's latest campaign texted in the 7 days before
    message_id: int | None = None
    keyword: str | None = None  # STOP, START, HELP, … when the whole text is one
    action: str | None = None  # "opted_out", "opted_in", "help" or None
    provider_message_id: str | None = None


@dataclass(frozen=True)
class ConversionRecorded:
    """A conversion event (a purchase, a sign-up) was stored and attributed."""

    conversion_id: int
    contact_id: int
    phone: str
    name: str
    revenue: float
    occurred_at: datetime
    campaign_id: int | None = None
    message_id: int | None = None
    attribution: str | None = None  # "direct" (clicked first), "influenced", or None


@dataclass(frozen=True)
class ContactCreated:
    """A contact was created (an upsert or an import that found no contact with that phone)."""

    contact_id: int
    phone: str
    created_at: datetime
    attributes: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class CampaignStatusChanged:
    """A campaign's workflow moved it (told by the worker after the move was stored)."""

    campaign_id: int
    kind: str  # campaign | follow_up | automation
    new_status: str
    parent_id: int | None = None
    run_id: int | None = None  # the automation run that made it
