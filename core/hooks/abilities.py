"""What a plugin can do beyond its required members: the one place that asks.

A provider may or may not look up lost sends, report delivery, name error codes, close, fetch
statuses or check its settings; a bot filter may want message times, or judge clicks together.
Each ability is a protocol of `core.hooks.contracts`; these functions answer for any object
(None too: a campaign may name a provider that is no longer enabled), with the default
Textpulse assumes when it is absent.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.hooks.contracts import (
    ChecksConfig,
    Closes,
    FetchesStatus,
    FindsSent,
    JudgesTogether,
    NamesPermanentErrors,
    NamesUnsubscribedErrors,
    NeedsMessageTimes,
    OutgoingMessage,
    ReportsDelivery,
    StatusUpdate,
)


def reports_delivery(provider: object | None) -> bool:
    """Do delivery reports come? Assumed so unless the provider says otherwise."""
    if isinstance(provider, ReportsDelivery):
        return bool(provider.reports_delivery)
    return True


def can_find_sent(provider: object | None) -> bool:
    return isinstance(provider, FindsSent)


def find_sent(provider: object | None, messages: list[OutgoingMessage]) -> dict[int, str]:
    """{message_id: provider_message_id} of the messages the gateway has already; {} when it cannot say
    (a provider with idempotency keys needs no lookup: sending again is safe)."""
    if not messages or not isinstance(provider, FindsSent):
        return {}
    return dict(provider.find_sent(messages))


def permanent_error_codes(provider: object | None) -> frozenset[str]:
    """The provider's error codes that another attempt cannot fix (core adds its own)."""
    if isinstance(provider, NamesPermanentErrors):
        return frozenset(str(code) for code in provider.permanent_error_codes or ())
    return frozenset()


def unsubscribed_error_codes(provider: object | None) -> frozenset[str]:
    """The provider's error codes meaning the recipient unsubscribed at the gateway."""
    if isinstance(provider, NamesUnsubscribedErrors):
        return frozenset(str(code) for code in provider.unsubscribed_error_codes or ())
    return frozenset()


def close(plugin: object | None) -> None:
    if isinstance(plugin, Closes):
        plugin.close()


def can_fetch_status(provider: object | None) -> bool:
    return isinstance(provider, FetchesStatus)


def fetch_status(provider: object | None, provider_message_ids: Sequence[str]) -> list[StatusUpdate]:
    """The gateway's statuses for these ids; [] when the provider cannot look them up."""
    if not provider_message_ids or not isinstance(provider, FetchesStatus):
        return []
    return list(provider.fetch_status(list(provider_message_ids)))


def config_problems(provider: object | None) -> list[str]:
    """What is wrong with the provider's settings; [] when it says nothing (or has no check)."""
    if isinstance(provider, ChecksConfig):
        return [str(problem) for problem in provider.check_config()]
    return []


def needs_message_times(bot_filter: object) -> bool:
    """Does this bot filter read when the click's text was sent and delivered?"""
    return isinstance(bot_filter, NeedsMessageTimes) and bool(bot_filter.needs_message_times)


def judges_together(bot_filter: object) -> bool:
    """Does this bot filter judge clicks together (`judge_together`, over a window of earlier clicks)?"""
    return isinstance(bot_filter, JudgesTogether) and callable(getattr(bot_filter, "judge_together", None))


def judges_each(bot_filter: object) -> bool:
    """Does this bot filter judge each click alone (`judge`)?"""
    return callable(getattr(bot_filter, "judge", None))
