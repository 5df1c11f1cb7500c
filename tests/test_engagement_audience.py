"""Engagement audiences (API.md "Campaign body"): `{"campaign": id, "engagement": ...}` picks the
parent campaign's recipients who clicked, replied or converted (or did not), on SQLite and
PostgreSQL; a bad one is refused naming the field. Definitions: core/campaigns/engagement.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from api.app import create_app
from core.campaigns.definition import iter_audience
from core.campaigns.launch_checks import check_launch
from core.db import make_engine, session_scope
from core.hooks.registry import PluginRegistry, load_plugins
from core.models import Campaign, Click, Contact, Conversion, Link, Message, Reply, Variant, utcnow
from core.settings import Settings
from core.statuses import CampaignStatus

# Each contact's messages of the parent campaign as (phase, status), and what it did afterwards.
CONTACTS: dict[str, dict[str, Any]] = {
    "clicker": {"messages": [("all", "sent")], "click": "human", "reply": None, "conversion": "purchase"},
    "bot_only": {"messages": [("all", "delivered")], "click": "bot", "reply": "HELP", "conversion": "signup"},
    "retried": {"messages": [("all", "failed"), ("retry", "delivered")], "click": "human", "conversion": "other"},
    "never_reached": {
        "messages": [("all", "failed"), ("retry", "undelivered")],
        "click": "human",
        "reply": "",
        "conversion": "purchase",
    },
    "tested": {"messages": [("test", "sent")], "reply": ""},
    "remainder": {"messages": [("remainder", "delivered")], "reply": "elsewhere", "conversion": "purchase"},
    "test_send_only": {"messages": [("test_send", "delivered")], "click": "human", "reply": ""},
    "held_out": {"messages": [("control", "cancelled")], "conversion": "purchase"},
    "opted_out": {"messages": [("all", "delivered")], "click": "human", "reply": "STOP", "opted_out": True},
    "queued": {"messages": [("all", "queued"), ("all", "cancelled")]},
    "stranger": {"messages": [], "click": None, "reply": "elsewhere", "conversion": "purchase"},
    "quiet": {"messages": [("test", "delivered")]},
}

EXPECTED = {
    "clicked": ["clicker", "retried"],
    "not_clicked": ["bot_only", "tested", "remainder", "quiet"],
    "replied": ["bot_only", "tested"],
    "not_replied": ["clicker", "retried", "remainder", "quiet"],
    "converted": ["clicker", "remainder"],
    "not_converted": ["bot_only", "retried", "tested", "quiet"],
}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def seed(engine: Engine, *, conversion: dict[str, Any] | None = None) -> tuple[int, dict[str, int]]:
    """The parent campaign (completed) and CONTACTS; returns its id and the contact ids by name.
    Engagement with another campaign is attributed to `other`."""
    with session_scope(engine) as session:
        parent = Campaign(name="Parent", status=CampaignStatus.COMPLETED, conversion=conversion, audience={"all": True})
        other = Campaign(name="Other", status=CampaignStatus.COMPLETED, audience={"all": True})
        session.add_all([parent, other])
        session.flush()
        assert parent.id is not None and other.id is not None
        variant = Variant(campaign_id=parent.id, name="A", body="Hi https://shop.example")
        session.add(variant)
        session.flush()
        link = Link(campaign_id=parent.id, variant_id=variant.id or 0, position=0, destination="https://shop.example")
        session.add(link)
        ids: dict[str, int] = {}
        for n, (name, spec) in enumerate(CONTACTS.items()):
            opted_out_at = utcnow() if spec.get("opted_out") else None
            contact = Contact(phone=f"+1202555{n:04d}", name=name, opted_out_at=opted_out_at)
            session.add(contact)
            session.flush()
            cid = ids[name] = contact.id or 0
            messages = []
            for i, (phase, status) in enumerate(spec["messages"]):
                message = Message(
                    campaign_id=parent.id,
                    contact_id=cid,
                    variant_id=variant.id,
                    phase=phase,
                    phone=contact.phone,
                    body="Hi",
                    provider="fake",
                    status=status,
                    idempotency_key=f"{parent.id}:{phase}:{cid}:{i}",
                )
                session.add(message)
                messages.append(message)
            session.flush()
            if spec.get("click"):
                # On the contact's last message; a bot's click never counts.
                clicked = messages[-1]
                session.add(
                    Click(
                        code=f"c{cid:06d}",
                        campaign_id=parent.id,
                        message_id=clicked.id or 0,
                        link_id=link.id or 0,
                        contact_id=cid,
                        is_bot=spec["click"] == "bot",
                    )
                )
            if (keyword := spec.get("reply")) is not None:
                session.add(
                    Reply(
                        contact_id=cid,
                        campaign_id=other.id if keyword == "elsewhere" else parent.id,
                        phone=contact.phone,
                        body=keyword or "thanks!",
                        keyword=keyword if keyword in ("HELP", "STOP") else None,
                        provider="fake",
                    )
                )
            if (event := spec.get("conversion")) is not None:
                # "other": a purchase attributed to another campaign; else the event name, attributed here.
                session.add(
                    Conversion(
                        contact_id=cid,
                        campaign_id=other.id if event == "other" else parent.id,
                        name="purchase" if event == "other" else event,
                        revenue=10,
                    )
                )
        return parent.id, ids


def audience_of(engine: Engine, audience: dict[str, Any], *, chunk: int = 2000) -> list[int]:
    with session_scope(engine, read_only=True) as session:
        campaign = Campaign(name="Follow-up", audience=audience)
        return [contact.id or 0 for contact in iter_audience(session, campaign, chunk=chunk)]


@pytest.mark.parametrize("engagement", list(EXPECTED))
def test_each_engagement_picks_the_parents_recipients_who_did_or_did_not(engine: Engine, engagement: str) -> None:
    parent_id, ids = seed(engine)
    expected = sorted(ids[name] for name in EXPECTED[engagement])
    assert audience_of(engine, {"campaign": parent_id, "engagement": engagement}) == expected
    # Streamed a chunk at a time, in contact id order, whatever the chunk size.
    assert audience_of(engine, {"campaign": parent_id, "engagement": engagement}, chunk=1) == expected


def test_converted_reads_the_parents_own_conversion_event(engine: Engine) -> None:
    parent_id, ids = seed(engine, conversion={"event": "signup", "window_hours": 24})
    converted = audience_of(engine, {"campaign": parent_id, "engagement": "converted"})
    assert converted == [ids["bot_only"]]
    not_converted = audience_of(engine, {"campaign": parent_id, "engagement": "not_converted"})
    assert not_converted == sorted(ids[name] for name in ["clicker", "retried", "tested", "remainder", "quiet"])


def test_a_campaign_that_is_gone_matches_nobody(engine: Engine) -> None:
    seed(engine)
    assert audience_of(engine, {"campaign": 999, "engagement": "not_clicked"}) == []


# -- over HTTP -------------------------------------------------------------------------------------


@pytest.fixture
def app_parts(database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient[Any], PluginRegistry, Engine]]:
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={})
    app = create_app(settings, registry=registry)
    with TestClient(app=app) as client:
        yield client, registry, app.state.engine
    registry.close()
    app.state.engine.dispose()


def _campaign(audience: dict[str, Any]) -> dict[str, Any]:
    return {"name": "Follow-up", "audience": audience, "variants": [{"name": "A", "body": "Hi {{ name }}"}]}


@pytest.mark.parametrize(
    ("audience", "key", "needle"),
    [
        ({"campaign": 1}, "audience", "audience.engagement is required"),
        ({"engagement": "clicked"}, "audience", "audience.campaign (the id of the campaign engaged with) is required"),
        ({"campaign": 1, "engagement": "opened"}, "audience.engagement", "'not_converted'"),
        ({"campaign": 0, "engagement": "clicked"}, "audience.campaign", "greater than or equal to 1"),
        ({"campaign": 1, "engagement": "clicked", "all": True}, "audience", "exactly one of"),
    ],
)
def test_a_malformed_engagement_audience_is_refused_naming_the_field(
    app_parts: tuple[TestClient[Any], PluginRegistry, Engine], audience: dict[str, Any], key: str, needle: str
) -> None:
    client, _, engine = app_parts
    seed(engine)
    response = client.post("/api/campaigns", json=_campaign(audience))
    # A body that does not validate is Litestar's 400 (as for every other field of the body), each
    # error keyed by its field with pydantic's message.
    assert response.status_code == 400, response.text
    errors = [(e["key"], e["message"]) for e in response.json()["extra"]]
    assert len(errors) == 1 and errors[0][0] == key and needle in errors[0][1], errors
    with session_scope(engine, read_only=True) as session:
        assert list(session.scalars(select(col(Campaign.name)).order_by(col(Campaign.id)))) == ["Parent", "Other"]


def test_an_unknown_parent_campaign_is_422_naming_it(app_parts: tuple[TestClient[Any], PluginRegistry, Engine]) -> None:
    client, _, engine = app_parts
    seed(engine)
    response = client.post("/api/campaigns", json=_campaign({"campaign": 999, "engagement": "clicked"}))
    assert response.status_code == 422, response.text
    assert "audience.campaign 999 does not exist" in response.json()["detail"]


def test_preview_and_launch_checks_see_the_engagement_audience(
    app_parts: tuple[TestClient[Any], PluginRegistry, Engine],
) -> None:
    client, registry, engine = app_parts
    parent_id, ids = seed(engine)
    created = client.post("/api/campaigns", json=_campaign({"campaign": parent_id, "engagement": "not_clicked"}))
    assert created.status_code == 201, created.text
    assert created.json()["audience"] == {"campaign": parent_id, "engagement": "not_clicked"}
    cid = created.json()["id"]
    preview = client.post(f"/api/campaigns/{cid}/preview", json={"limit": 10})
    assert preview.status_code == 200, preview.text
    samples = preview.json()["variants"][0]["samples"]
    assert [s["contact_id"] for s in samples] == sorted(ids[name] for name in EXPECTED["not_clicked"])
    assert samples[0]["body"] == "Hi bot_only"
    check_launch(engine, registry, cid)  # someone to text: no problem

    # The other campaign sent nothing: its engagement audiences are empty, and launch says so.
    with session_scope(engine, read_only=True) as session:
        other_id = session.scalar(select(col(Campaign.id)).where(col(Campaign.name) == "Other"))
    empty = client.post("/api/campaigns", json=_campaign({"campaign": other_id, "engagement": "replied"}))
    assert empty.status_code == 201, empty.text
    refused = client.post(f"/api/campaigns/{empty.json()['id']}/launch")
    assert refused.status_code == 422, refused.text
    assert "is empty" in refused.json()["detail"] and f'"campaign": {other_id}' in refused.json()["detail"]
