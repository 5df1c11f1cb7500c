"""Automation runs as the API lists them (table `workflow_run`), and the lookups events need.

A row is made by whoever first knows of a run — the API or CLI that started it, the relay that
started it on an event, or the run's own first activity — keyed by Temporal's run id, so it is
made once whoever races. Its status moves once, from `running` to an end (`finish`), so a
cancel and the run's own completion cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.campaigns.definition import iso
from core.db import session_scope
from core.errors import NotFound
from core.models import Campaign, WorkflowRun, utcnow
from core.statuses import RunStatus


class RunNotFound(NotFound):
    """No automation run has this id."""


def record_run(
    engine: Engine,
    *,
    workflow: str,
    workflow_id: str,
    temporal_run_id: str,
    params: dict[str, Any],
    contact_id: int | None = None,
    campaign_id: int | None = None,
    trigger: str | None = None,
    started_at: datetime | None = None,
) -> int:
    """The run's row id, the row made if nobody made it yet (insert-or-nothing on the run id)."""
    values: dict[str, Any] = {
        "workflow": workflow,
        "workflow_id": workflow_id,
        "temporal_run_id": temporal_run_id,
        "status": RunStatus.RUNNING,
        "params": params,
        "trigger": trigger,
        "contact_id": contact_id,
        "campaign_id": campaign_id,
        "progress": {},
        "campaign_ids": [],
        "started_at": started_at or utcnow(),
    }
    with session_scope(engine) as session:
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        session.execute(insert(WorkflowRun).values(**values).on_conflict_do_nothing(index_elements=["temporal_run_id"]))
        found = session.scalar(select(col(WorkflowRun.id)).where(col(WorkflowRun.temporal_run_id) == temporal_run_id))
        assert found is not None
        return int(found)


def get_run(session: Session, run_id: int) -> WorkflowRun:
    run = session.get(WorkflowRun, run_id)
    if run is None:
        raise RunNotFound(f"automation run {run_id} does not exist")
    return run


def campaign_ids_of(session: Session, run: WorkflowRun) -> list[int]:
    """The campaigns the run sent through: those it made (`run_id`) and the step campaigns it used."""
    made = session.scalars(select(col(Campaign.id)).where(col(Campaign.run_id) == run.id)).all()
    return sorted({*(int(i or 0) for i in made), *(int(i) for i in run.campaign_ids or [])})


def run_dicts(session: Session, rows: list[WorkflowRun]) -> list[dict[str, Any]]:
    """Several runs as the API shows them, the campaigns they made read in one query."""
    made: dict[int, list[int]] = {}
    ids = [run.id for run in rows if run.id is not None]
    if ids:
        for campaign_id, run_id in session.execute(
            select(col(Campaign.id), col(Campaign.run_id)).where(col(Campaign.run_id).in_(ids))
        ):
            made.setdefault(int(run_id or 0), []).append(int(campaign_id or 0))
    return [run_dict(session, run, made=made.get(run.id or 0, [])) for run in rows]


def run_dict(session: Session, run: WorkflowRun, *, made: list[int] | None = None) -> dict[str, Any]:
    campaign_ids = (
        campaign_ids_of(session, run) if made is None else sorted({*made, *(int(i) for i in run.campaign_ids or [])})
    )
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status,
        "params": run.params,
        "started_at": iso(run.started_at),
        "completed_at": iso(run.completed_at),
        "campaign_ids": campaign_ids,
        "progress": run.progress or {},
        "trigger": run.trigger,
        "contact_id": run.contact_id,
        "campaign_id": run.campaign_id,
        "workflow_id": run.workflow_id,
        "error": run.error,
    }


def finish(
    engine: Engine, run_id: int, status: str, *, progress: dict[str, Any] | None = None, error: str | None = None
) -> bool:
    """Move a running run to its end; False when it had ended already (the first end wins)."""
    values: dict[str, Any] = {"status": status, "completed_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    if error is not None:
        values["error"] = error[:2000]
    with session_scope(engine) as session:
        result = session.execute(
            update(WorkflowRun)
            .where(col(WorkflowRun.id) == run_id, col(WorkflowRun.status) == RunStatus.RUNNING)
            .values(**values)
        )
        if result.rowcount or progress is None:  # type: ignore[attr-defined]
            return bool(result.rowcount)  # type: ignore[attr-defined]
        # Ended so already (a cancel is recorded by the API first): the run's own end adds its progress.
        session.execute(
            update(WorkflowRun)
            .where(col(WorkflowRun.id) == run_id, col(WorkflowRun.status) == status)
            .values(progress=progress)
        )
        return False


def set_progress(session: Session, run_id: int, progress: dict[str, Any]) -> None:
    session.execute(update(WorkflowRun).where(col(WorkflowRun.id) == run_id).values(progress=progress))


def add_campaign(session: Session, run_id: int, campaign_id: int) -> None:
    """Note a step campaign the run sent through (a campaign it made has `run_id` already)."""
    run = get_run(session, run_id)
    if campaign_id not in (run.campaign_ids or []):
        run.campaign_ids = [*(run.campaign_ids or []), campaign_id]
        session.add(run)


def is_running(session: Session, run_id: int) -> bool:
    return session.scalar(select(col(WorkflowRun.status)).where(col(WorkflowRun.id) == run_id)) == RunStatus.RUNNING


def running_for_contacts(engine: Engine, contact_ids: Iterable[int]) -> list[tuple[int, str, str]]:
    """(contact id, workflow id, Temporal run id) of the running runs about these contacts."""
    ids = sorted(set(contact_ids))
    if not ids:
        return []
    with session_scope(engine, read_only=True) as session:
        rows = session.execute(
            select(col(WorkflowRun.contact_id), col(WorkflowRun.workflow_id), col(WorkflowRun.temporal_run_id)).where(
                col(WorkflowRun.contact_id).in_(ids), col(WorkflowRun.status) == RunStatus.RUNNING
            )
        ).all()
    return [(int(c or 0), w, r) for c, w, r in rows]


def running_about_campaigns(engine: Engine, campaign_ids: Iterable[int]) -> list[tuple[int, str, str]]:
    """(campaign id, workflow id, Temporal run id) of the running runs a campaign's end concerns:
    those about the campaign (a follow_up's parent) and those that made it."""
    ids = sorted(set(campaign_ids))
    if not ids:
        return []
    with session_scope(engine, read_only=True) as session:
        about = session.execute(
            select(col(WorkflowRun.campaign_id), col(WorkflowRun.workflow_id), col(WorkflowRun.temporal_run_id)).where(
                col(WorkflowRun.campaign_id).in_(ids), col(WorkflowRun.status) == RunStatus.RUNNING
            )
        ).all()
        made = session.execute(
            select(col(Campaign.id), col(WorkflowRun.workflow_id), col(WorkflowRun.temporal_run_id))
            .join(WorkflowRun, col(WorkflowRun.id) == col(Campaign.run_id))
            .where(col(Campaign.id).in_(ids), col(WorkflowRun.status) == RunStatus.RUNNING)
        ).all()
    return sorted({(int(c or 0), w, r) for c, w, r in [*about, *made]})


def list_query(workflow: str | None, status: str | None) -> Any:
    query = select(WorkflowRun)
    if workflow:
        query = query.where(col(WorkflowRun.workflow) == workflow)
    if status:
        query = query.where(col(WorkflowRun.status) == status)
    return query


def runs_of_campaign(session: Session, campaign_id: int) -> list[WorkflowRun]:
    """Runs about a campaign or that made it (the dashboard's follow-ups of a campaign)."""
    made_by = select(col(Campaign.run_id)).where(col(Campaign.id) == campaign_id)
    return list(
        session.scalars(
            select(WorkflowRun)
            .where(or_(col(WorkflowRun.campaign_id) == campaign_id, col(WorkflowRun.id).in_(made_by)))
            .order_by(col(WorkflowRun.id))
        )
    )


def epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def any_running_about_contacts(engine: Engine, workflows: list[str]) -> bool:
    """Is a run of these automations about a contact running (one indexed probe)?"""
    if not workflows:
        return False
    with session_scope(engine, read_only=True) as session:
        found = session.scalar(
            select(col(WorkflowRun.id))
            .where(
                col(WorkflowRun.workflow).in_(workflows),
                col(WorkflowRun.status) == RunStatus.RUNNING,
                col(WorkflowRun.contact_id).is_not(None),
            )
            .limit(1)
        )
    return found is not None
