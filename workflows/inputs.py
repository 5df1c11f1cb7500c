"""Inputs and outputs of the campaign workflow and its activities: one dataclass each, so
fields can be added without breaking running workflows. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CampaignState:
    """What the campaign workflow carries over a continue-as-new."""

    batches: list[list[int]] = field(default_factory=list)  # [first message id, last message id]
    done: int = 0
    recipients: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    snapshot_taken: bool = False


@dataclass
class CampaignInput:
    campaign_id: int
    batch_size: int = 500  # messages per send activity
    max_concurrent_batches: int = 4
    # Every wait is a parameter so tests can use seconds.
    send_timeout_seconds: float = 300.0
    start_at_epoch: float | None = None  # schedule_at, as seconds since the epoch
    state: CampaignState | None = None


@dataclass
class CampaignResult:
    campaign_id: int
    status: str
    recipients: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass
class CampaignStatusInput:
    campaign_id: int
    status: str
    only_from: list[str] | None = None
    error: str | None = None


@dataclass
class SnapshotInput:
    campaign_id: int
    phase: str = "all"
    batch_size: int = 500


@dataclass
class SnapshotResult:
    recipients: int
    created: int
    batches: list[list[int]] = field(default_factory=list)  # [first message id, last message id]


@dataclass
class SendBatchInput:
    campaign_id: int
    first_message_id: int
    last_message_id: int
    phase: str = "all"


@dataclass
class SendBatchResult:
    sent: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass
class CampaignProgress:
    campaign_id: int
    state: str
    batches_total: int = 0
    batches_done: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    paused: bool = False
    cancelled: bool = False
