"""Textpulse, a self-hosted SMS campaign engine: the public face for plugin and automation authors.

    from textpulse import hookimpl, Provider, SendResult, StatusUpdate

Everything a plugin needs is importable from here (docs/plugins.md). Importing this package
stays light: the standard library, pluggy and Textpulse's contract modules, no web framework,
Temporal or database driver.
"""

from __future__ import annotations

from core.hooks.contracts import (
    MESSAGE_STATUSES,
    BotFilter,
    CampaignStatusChanged,
    ChecksConfig,
    ClickRecorded,
    ClickTarget,
    ClickToJudge,
    Closes,
    ContactCreated,
    ConversionRecorded,
    FetchesStatus,
    FindsSent,
    InboundMessage,
    JudgedClick,
    JudgesTogether,
    MessageStatusChanged,
    NamesPermanentErrors,
    NamesUnsubscribedErrors,
    NeedsMessageTimes,
    OutgoingMessage,
    Provider,
    ReplyReceived,
    ReportsDelivery,
    SendResult,
    Shortener,
    StatusUpdate,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
    is_wellformed_code,
)
from core.hooks.hookspecs import hookimpl
from core.hooks.registry import PluginContext
from core.statuses import MessageStatus

__all__ = [
    # hooks
    "hookimpl",
    "PluginContext",
    # providers: the required protocol and each optional ability
    "Provider",
    "FindsSent",
    "ReportsDelivery",
    "NamesPermanentErrors",
    "NamesUnsubscribedErrors",
    "Closes",
    "FetchesStatus",
    "ChecksConfig",
    # what providers exchange
    "OutgoingMessage",
    "SendResult",
    "StatusUpdate",
    "InboundMessage",
    "WebhookRequest",
    "WebhookResponse",
    "WebhookError",
    "MessageStatus",
    "MESSAGE_STATUSES",
    # shorteners and bot filters
    "Shortener",
    "is_wellformed_code",
    "BotFilter",
    "NeedsMessageTimes",
    "JudgesTogether",
    "JudgedClick",
    "ClickToJudge",
    "ClickTarget",
    # the payloads of the on_* hooks
    "MessageStatusChanged",
    "ClickRecorded",
    "ReplyReceived",
    "ConversionRecorded",
    "ContactCreated",
    "CampaignStatusChanged",
]
