"""Inputs and outputs of the campaign workflow and its activities: one dataclass each, so
fields can be added without breaking running workflows. Standard library only (and
core.statuses, which is too): the workflow sandbox imports this module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.statuses import Phase


@dataclass
class CampaignState:
    """What the campaign workflow carries over a continue-as-new."""

    stage: str = "starting"  # starting | snapshot | a Phase being sent | waiting | completed | cancelled
    batches: list[list[int]] = field(default_factory=list)  # of the stage: [first message id, last message id]
    done: int = 0
    recipients: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    wait_until_epoch: float | None = None  # end of the A/B wait
    resume_at_epoch: float | None = None  # end of the first recipient's quiet hours, when some wait
    # The stage's batches not yet sent in full (sliding window); None: those after `done`.
    todo: list[list[int]] | None = None
    status: str | None = None  # the campaign's status as the workflow last set it


@dataclass
class CampaignInput:
    campaign_id: int
    batch_size: int = 500  # messages per send activity
    max_concurrent_batches: int = 4
    # Every wait is a parameter so tests can use seconds.
    send_timeout_seconds: float = 300.0  # one send activity, start to close
    # A worker that stops heartbeating for this long is presumed dead: its batch goes to another.
    heartbeat_timeout_seconds: float = 20.0
    start_at_epoch: float | None = None  # schedule_at, as seconds since the epoch
    ab_wait_seconds: float = 7200.0  # the A/B test's wait after its last message is sent
    ab_poll_seconds: float = 60.0  # how often the test is looked at during the wait
    rate_limit_per_second: float | None = None  # set: one batch at a time, the activity paces itself
    # After sending, messages without a final status this long are looked up at the provider
    # (its `fetch_status` ability); None: never.
    status_settle_seconds: float | None = None
    retry_round: int | None = None  # set: this run resends the failed messages of a finished campaign
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
    """A move of core.campaigns.lifecycle. Runs started before the transition table sent no
    `move`, only `status` and `only_from`; new runs still fill them in from the table."""

    campaign_id: int
    status: str
    only_from: list[str] | None = None
    error: str | None = None
    move: str | None = None


@dataclass
class SnapshotInput:
    campaign_id: int
    phase: str = Phase.ALL
    batch_size: int = 500


@dataclass
class RetryInput:
    campaign_id: int
    round: int
    batch_size: int = 500


@dataclass
class SnapshotResult:
    recipients: int
    created: int = 0
    phase: str = Phase.ALL
    batches: list[list[int]] = field(default_factory=list)  # [first message id, last message id]


@dataclass
class EvaluateInput:
    campaign_id: int
    at_deadline: bool = False


@dataclass
class DecisionResult:
    decided: bool
    variant: str | None = None  # None: all variants (or hold)
    hold: bool = False
    method: str = ""
    reason: str = ""
    # What the statistics said when they decided (core.stats.winner.evidence_of); None by hand.
    evidence: dict[str, Any] | None = None


@dataclass
class WinnerInput:
    campaign_id: int
    decision: DecisionResult


@dataclass
class PrepareInput:
    campaign_id: int
    variant: str | None = None
    hold: bool = False
    reason: str = ""
    batch_size: int = 500


@dataclass
class SendBatchInput:
    campaign_id: int
    first_message_id: int
    last_message_id: int
    phase: str = Phase.ALL


@dataclass
class SendBatchResult:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0  # in their recipients' quiet hours: still queued
    resume_at_epoch: float | None = None
    stopped: str | None = None  # set: a pause or cancel (the campaign's status) stopped the batch early


@dataclass
class ListBatchesInput:
    campaign_id: int
    phase: str
    batch_size: int = 500


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


@dataclass
class ReconcileInput:
    campaign_id: int
    settle_seconds: float


@dataclass
class ReconcileResult:
    asked: int = 0
    updated: int = 0
    awaiting: int = 0
