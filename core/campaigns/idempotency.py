"""Idempotency keys: the one name of each message row a campaign plans, made here only.

A key is unique in the database, so creating a row twice (a retried activity) fails or is
skipped, and it is handed to the provider with the message (providers with idempotency keys
use it to refuse a second send). Stored rows carry these exact strings: the formats never change.
- a snapshot row: `c{campaign}-{phase}-{contact}`;
- a retry-failed row: `c{campaign}-retry{round}-{contact}` (the round is read back from it);
- a test send: `c{campaign}-test_send-{contact}-v{variant}-{random}`, each one a new message;
- an automation's text to one contact: `c{campaign}-run{run}-{contact}` (one per run and step campaign).
"""

from __future__ import annotations

import secrets

from core.statuses import Phase


def idempotency_key(
    campaign_id: int, phase: str, contact_id: int, *, retry_round: int | None = None, variant_id: int | None = None
) -> str:
    """The key of a new message row of `phase`; a retry names its round, a test send its variant."""
    if phase == Phase.RETRY:
        if retry_round is None:
            raise ValueError("a retry message's key needs its retry round")
        return f"c{campaign_id}-retry{retry_round}-{contact_id}"
    if phase == Phase.TEST_SEND:
        if variant_id is None:
            raise ValueError("a test send's key needs its variant")
        return f"c{campaign_id}-{Phase.TEST_SEND}-{contact_id}-v{variant_id}-{secrets.token_hex(6)}"
    return f"c{campaign_id}-{phase}-{contact_id}"


def retry_round_of(key: str) -> int:
    """The round of a retry message's key (`c7-retry2-15` → 2)."""
    return int(key.split("-")[1][len("retry") :])


def automation_key(campaign_id: int, run_id: int, contact_id: int) -> str:
    """The key of the one text an automation run sends a contact from a step campaign."""
    return f"c{campaign_id}-run{run_id}-{contact_id}"
