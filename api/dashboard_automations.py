"""What the dashboard shows of automations (API.md "Automations"): a campaign's follow-ups and the
runs about it, the automations page (every registered automation with its latest runs), a run's page.

Read from the same rows as /api/workflows (table `workflow_run`, `core/automations/runs.py`); a run
of an automation no plugin registers any more is still listed, under its name, so no run is lost
from sight when a plugin is turned off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.automations.runs import get_run, run_dict, runs_of_campaign
from core.campaigns.definition import iso
from core.db import session_scope
from core.hooks.registry import PluginRegistry
from core.models import Campaign, Contact, WorkflowRun

RUNS_PER_AUTOMATION = 50
# A follow-up's `audience` (plugins/follow_up.py `Engagement`) as "to those who …".
AUDIENCE_WORDS = {
    "clicked": "clicked",
    "not_clicked": "did not click",
    "replied": "replied",
    "not_replied": "did not reply",
    "converted": "converted",
    "not_converted": "did not convert",
}


def _campaign_row(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "kind": campaign.kind,
        "recipients": campaign.recipients,
        "created_at": iso(campaign.created_at),
        "completed_at": iso(campaign.completed_at),
    }


def _run_row(run: WorkflowRun) -> dict[str, Any]:
    """A run as a line of a list (no campaign lookups: the run's page has those)."""
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status,
        "trigger": run.trigger,
        "contact_id": run.contact_id,
        "campaign_id": run.campaign_id,
        "progress": run.progress or {},
        "error": run.error,
        "started_at": iso(run.started_at),
        "completed_at": iso(run.completed_at),
    }


def _campaign_names(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.execute(select(col(Campaign.id), col(Campaign.name)).where(col(Campaign.id).in_(wanted)))
    return {int(i): str(name) for i, name in rows}


def campaign_automations(session: Session, campaign: Campaign) -> dict[str, Any]:
    """The campaign page's "Follow-ups & automations": its parent (a follow-up's), the run that made
    it, its follow-up campaigns, the runs about it or that made it, and the follow-ups set at launch."""
    follow_ups = session.scalars(
        select(Campaign).where(col(Campaign.parent_id) == campaign.id).order_by(col(Campaign.id))
    ).all()
    runs = runs_of_campaign(session, campaign.id or 0)
    parent = session.get(Campaign, campaign.parent_id) if campaign.parent_id is not None else None
    made_by = session.get(WorkflowRun, campaign.run_id) if campaign.run_id is not None else None
    return {
        "parent": {"id": parent.id, "name": parent.name} if parent else None,
        # A run id no row has (the row is made by the run's first activity) still shows as its id.
        "made_by": {"id": campaign.run_id, "workflow": made_by.workflow if made_by else None}
        if campaign.run_id is not None
        else None,
        "follow_up_campaigns": [_campaign_row(c) for c in follow_ups],
        "runs": [_run_row(r) for r in runs],
        "follow_up_specs": [
            {
                "after_seconds": float(spec.get("after_seconds", 86400)),
                "audience": AUDIENCE_WORDS.get(str(spec.get("audience", "not_clicked")), str(spec.get("audience"))),
            }
            for spec in campaign.follow_ups or []
        ],
    }


def automations_page(engine: Engine, registry: PluginRegistry) -> dict[str, Any]:
    """Every registered automation (then any other name runs are stored under) with its latest
    runs, newest first, how many it has in all and how many are in each status."""
    registered = registry.automations()
    with session_scope(engine, read_only=True) as session:
        counts: dict[str, dict[str, int]] = {}
        for workflow, status, n in session.execute(
            select(col(WorkflowRun.workflow), col(WorkflowRun.status), func.count())
            .group_by(col(WorkflowRun.workflow), col(WorkflowRun.status))
            .order_by(col(WorkflowRun.workflow), col(WorkflowRun.status))
        ):
            counts.setdefault(str(workflow), {})[str(status)] = int(n)
        names = [*registered, *sorted(set(counts) - set(registered))]
        automations: list[dict[str, Any]] = []
        for name in names:
            runs = session.scalars(
                select(WorkflowRun)
                .where(col(WorkflowRun.workflow) == name)
                .order_by(col(WorkflowRun.id).desc())
                .limit(RUNS_PER_AUTOMATION)
            ).all()
            automation = registered.get(name)
            automations.append(
                {
                    "name": name,
                    "registered": automation is not None,
                    "description": automation.description if automation else None,
                    "triggers": list(automation.triggers) if automation else [],
                    # Runs on its triggers only when plugins.toml turns it on (`enabled = true`).
                    "enabled": automation is not None and automation.trigger_params is not None,
                    "params": sorted((automation.schema().get("properties") or {}) if automation else {}),
                    "runs": [_run_row(r) for r in runs],
                    "total": sum(counts.get(name, {}).values()),
                    "by_status": counts.get(name, {}),
                }
            )
        campaign_names = _campaign_names(session, (r["campaign_id"] for a in automations for r in a["runs"]))
    return {"automations": automations, "campaign_names": campaign_names}


def run_page(engine: Engine, registry: PluginRegistry, run_id: int) -> dict[str, Any]:
    """A run as the API shows it, with its contact, the campaign it is about and its campaigns."""
    with session_scope(engine, read_only=True) as session:
        run = run_dict(session, get_run(session, run_id))
        contact = session.get(Contact, run["contact_id"]) if run["contact_id"] is not None else None
        about = session.get(Campaign, run["campaign_id"]) if run["campaign_id"] is not None else None
        campaigns = {
            c.id: _campaign_row(c)
            for c in session.scalars(select(Campaign).where(col(Campaign.id).in_(run["campaign_ids"])))
        }
        return {
            "run": run,
            "registered": run["workflow"] in registry.automations(),
            "contact": {"id": contact.id, "name": contact.name, "phone": contact.phone} if contact else None,
            "about": _campaign_row(about) if about else None,
            # In the run's order; an id whose row is gone still shows, as its id.
            "campaigns": [campaigns.get(i) or {"id": i, "name": None} for i in run["campaign_ids"]],
        }
