"""Launch checks: the mistakes that would otherwise show only once a campaign has started.

A campaign launches only when it can send at all (API.md "Launch checks and test sends"):
- its provider is enabled and says its settings are complete (the optional `ChecksConfig`
  ability, e.g. Twilio without credentials);
- its audience has someone to text (at least one contact matches and has not opted out), found
  by reading the audience only up to its first contact;
- its `schedule_at`, if any, does not lie in the past (beyond `SCHEDULE_SKEW` of clock skew).
Every problem is reported at once, in one `CampaignInvalid` (422), before anything moves: the
campaign stays a draft and no workflow starts.
"""

from __future__ import annotations

import json

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.campaigns.definition import CampaignInvalid, get_campaign, iter_audience, schedule_problem
from core.campaigns.lifecycle import Move, transition
from core.db import session_scope
from core.hooks import abilities
from core.hooks.registry import PluginRegistry
from core.models import Campaign


def provider_problems(registry: PluginRegistry, name: str) -> list[str]:
    """Why the campaign's provider cannot send: not enabled (any more), or its own config check."""
    try:
        provider = registry.provider(name)
    except KeyError:
        return [f"provider {name!r} is not enabled; enabled: {', '.join(sorted(registry.providers))}"]
    problems = abilities.config_problems(provider)
    if not problems:
        return []
    return [f"provider {name!r} is not configured: {'; '.join(problems)}"]


def has_audience(session: Session, campaign: Campaign) -> bool:
    """Is anyone to text? Stops at the first contact: one row read for `all` and `contact_ids`
    (opted-out contacts are left out in the query); an attribute filter reads the matching ids off
    the index, then their contacts by chunks only until one has not opted out."""
    audience = campaign.audience or {}
    chunk = 500 if audience.get("attributes") else 1
    return next(iter_audience(session, campaign, chunk=chunk), None) is not None


def audience_problem(session: Session, campaign: Campaign) -> str | None:
    if has_audience(session, campaign):
        return None
    return (
        f"audience {json.dumps(campaign.audience or {}, sort_keys=True)} is empty: no contact matches it "
        "(opted-out contacts are left out); nobody would be texted"
    )


def launch_problems(session: Session, registry: PluginRegistry, campaign: Campaign) -> list[str]:
    problems = provider_problems(registry, campaign.provider)
    if (problem := audience_problem(session, campaign)) is not None:
        problems.append(problem)
    if (problem := schedule_problem(campaign.schedule_at)) is not None:
        problems.append(problem)
    return problems


def check_launch(engine: Engine, registry: PluginRegistry, campaign_id: int) -> None:
    """Raise CampaignInvalid naming every reason the campaign cannot launch; CampaignNotFound
    when there is no such campaign. Reads only. A campaign that cannot launch from its status
    anyway (launched already) is not checked: the launch move answers for it (409)."""
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign.status not in transition(Move.LAUNCH).sources:
            return
        problems = launch_problems(session, registry, campaign)
    if problems:
        raise CampaignInvalid(f"campaign {campaign_id} cannot launch: {'; '.join(problems)}", extra=problems)
