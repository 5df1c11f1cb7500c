"""Every move a campaign's status can make, in one table.

The API (launch, pause, resume, cancel, retry-failed) and the campaign workflow (start, wait,
finish) make these moves through `core.campaigns.definition.apply_move`, so "where may a campaign
go from here" is answered in one place, 409 texts included. (`set_status` remains only for the
status activity of runs started before this table, whose inputs name the status.) Standard
library only: the workflow imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.statuses import CampaignStatus as S


class Move(StrEnum):
    """The name of a transition; the workflow sends it to its status activity."""

    LAUNCH = "launch"  # POST /launch: the workflow is about to start
    LAUNCH_SCHEDULED = "launch_scheduled"  # POST /launch of a campaign with a `schedule_at` ahead
    SCHEDULE = "schedule"  # the workflow waits for `schedule_at`
    START = "start"  # sending begins
    WAIT = "wait"  # the A/B test cohort is sent: wait for results
    DECIDE = "decide"  # a winner is known: send the remainder
    HOLD = "hold"  # the test ended undecided under `fallback: hold`: wait for POST /winner
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"  # asked for by the API
    COMPLETE = "complete"  # the workflow ends normally
    END_CANCELLED = "end_cancelled"  # the workflow ends after a cancel
    RETRY = "retry"  # POST /retry-failed: a retry run starts
    UNDO_LAUNCH = "undo_launch"  # the workflow could not be started: back to draft
    UNDO_RETRY = "undo_retry"  # the retry run could not be started: back to completed


@dataclass(frozen=True)
class Transition:
    move: Move
    sources: tuple[S, ...]  # empty: from any status
    target: S

    def allows(self, status: str) -> bool:
        return not self.sources or status in self.sources

    def refusal(self, campaign_id: int, status: str) -> str:
        """Why the move is refused, in the words of a 409."""
        allowed = " or ".join(self.sources)
        return f"cannot {self.move} campaign {campaign_id}: it is {status}; {self.move} works when it is {allowed}"


_RUNNING_ON = (S.RUNNING, S.PAUSED, S.SCHEDULED, S.WAITING, S.HELD)

TRANSITIONS: dict[Move, Transition] = {
    t.move: t
    for t in (
        Transition(Move.LAUNCH, (S.DRAFT,), S.RUNNING),
        Transition(Move.LAUNCH_SCHEDULED, (S.DRAFT,), S.SCHEDULED),
        Transition(Move.SCHEDULE, (S.DRAFT, S.RUNNING), S.SCHEDULED),
        Transition(Move.START, (S.DRAFT, S.SCHEDULED), S.RUNNING),
        Transition(Move.WAIT, (S.RUNNING,), S.WAITING),
        Transition(Move.DECIDE, (S.WAITING, S.HELD), S.RUNNING),
        Transition(Move.HOLD, (S.WAITING,), S.HELD),
        Transition(Move.PAUSE, (S.RUNNING, S.SCHEDULED), S.PAUSED),
        Transition(Move.RESUME, (S.PAUSED,), S.RUNNING),
        Transition(Move.CANCEL, (S.DRAFT, S.SCHEDULED, S.RUNNING, S.PAUSED, S.WAITING, S.HELD), S.CANCELLED),
        Transition(Move.COMPLETE, _RUNNING_ON, S.COMPLETED),
        Transition(Move.END_CANCELLED, _RUNNING_ON, S.CANCELLED),
        Transition(Move.RETRY, (S.COMPLETED,), S.RUNNING),
        Transition(Move.UNDO_LAUNCH, (), S.DRAFT),
        Transition(Move.UNDO_RETRY, (), S.COMPLETED),
    )
}


def transition(move: Move | str) -> Transition:
    return TRANSITIONS[Move(move)]
