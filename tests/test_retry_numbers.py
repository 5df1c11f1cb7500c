"""Retry-failed does not distort the numbers (API.md "Definitions"): a retried contact counts once,
by its latest attempt, and `attempts` counts every message handed to the provider.

The first test runs a campaign and its retry through the real workflow with the fake provider;
the others build rows directly through the engine to pin down each route's definition.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from core.campaigns.idempotency import idempotency_key
from core.db import make_engine, session_scope
from core.models import Campaign, Click, Contact, Conversion, Link, Message, Variant
from core.stats import breakdowns, evidence, summary
from core.stats import variants as variant_stats
from core.stats.counting import campaigns_with_retries, has_retries
from core.statuses import MessageStatus, Phase
from tests.live import LiveService, wait_for

PHONES = [f"+1202555{7000 + i:04d}" for i in range(6)]


def _consistent(live: LiveService, cid: int) -> dict[str, Any]:
    """Every route tells the same story of the campaign; the summary is returned."""
    stats = live.stats(cid)
    variants = live.get(f"/api/campaigns/{cid}/stats/variants").json()
    rows = [row for row in variants["variants"] if not row["is_control"]]
    for key in ("recipients", "sent", "delivered"):
        assert sum(row[key] for row in rows) == variants["all_variants"][key] == stats[key], key
    funnel = {s["name"]: s["contacts"] for s in live.get(f"/api/campaigns/{cid}/stats/funnel").json()["steps"]}
    assert (funnel["sent"], funnel["delivered"]) == (stats["sent"], stats["delivered"])
    trend = live.get(f"/api/campaigns/{cid}/stats/trend").json()["buckets"]
    assert (sum(b["sent"] for b in trend), sum(b["delivered"] for b in trend)) == (stats["sent"], stats["delivered"])
    errors = live.get(f"/api/campaigns/{cid}/stats/errors").json()["errors"]
    assert sum(e["count"] for e in errors) == stats["failed"] + stats["undelivered"]
    assert stats["recipients"] <= len(PHONES)
    return stats


def test_a_retried_contact_counts_once_by_its_latest_attempt(
    database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    # Seed 1 at a delivery ratio of 0.6 fails the 1st and 4th of six sends (30003: worth retrying).
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        plugin_config={
            "plugins": {
                "fake": {
                    "delivery_ratio": 0.6,
                    "fail_codes": ["30003"],
                    "seed": 1,
                    "callback_delay_seconds": [0.01, 0.03],
                }
            }
        },
    )
    live.start()
    try:
        live.post("/api/contacts", [{"phone": p} for p in PHONES])
        cid = live.post(
            "/api/campaigns",
            {"name": "Retry numbers", "variants": [{"name": "A", "body": "Hi A"}, {"name": "B", "body": "Hi B"}]},
        ).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="completed")
        wait_for(
            lambda: (s := live.stats(cid))["delivered"] + s["failed"] + s["undelivered"] == 6,
            what="every first attempt settled",
        )
        first = live.stats(cid)
        assert (first["recipients"], first["sent"], first["delivered"], first["attempts"]) == (6, 6, 4, 6)
        assert first["failed"] + first["undelivered"] == 2 and first["delivery_rate"] == round(4 / 6, 6)
        _consistent(live, cid)
        failed_first = {m["phone"]: m["variant"] for m in live.messages(cid) if m["status"] != "delivered"}

        live.fake.delivery_ratio = 1.0  # the second attempt gets through
        assert live.post(f"/api/campaigns/{cid}/retry-failed").status_code == 202
        wait_for(
            lambda: (
                live.get(f"/api/campaigns/{cid}").json()["status"] == "completed" and live.stats(cid)["delivered"] == 6
            ),
            what="the retries delivered",
        )
        stats = _consistent(live, cid)
        assert {k: stats[k] for k in ("recipients", "queued", "sent", "delivered", "undelivered", "failed")} == {
            "recipients": 6,
            "queued": 0,
            "sent": 6,
            "delivered": 6,
            "undelivered": 0,
            "failed": 0,
        }
        assert (stats["delivery_rate"], stats["attempts"]) == (1.0, 8)
        assert live.get(f"/api/campaigns/{cid}/stats/errors").json()["errors"] == []

        # Per variant: a retry row keeps the variant of the message it retried.
        messages = live.messages(cid)
        assert len(messages) == 8  # the log keeps every message
        retried = {m["phone"]: m["variant"] for m in messages if m["phase"] == "retry"}
        assert retried == failed_first
        audience = Counter(m["variant"] for m in messages if m["phase"] != "retry")
        variants = live.get(f"/api/campaigns/{cid}/stats/variants").json()
        assert {row["variant"]: (row["recipients"], row["sent"], row["delivered"]) for row in variants["variants"]} == {
            name: (n, n, n) for name, n in audience.items()
        }
        assert (variants["all_variants"]["recipients"], variants["all_variants"]["delivered"]) == (6, 6)
        assert Counter(entry["to"] for entry in live.fake.ledger()) == Counter(PHONES) + Counter(list(failed_first))

        # The export is a log too: one row per message, the retries included.
        export = live.get(f"/api/campaigns/{cid}/export.csv").text.strip().splitlines()
        assert len(export) == 1 + 8

        # The dashboard shows the same numbers: the summary cards and the campaign list.
        page = live.get(f"/campaigns/{cid}").text
        for stat, value in (("sent", "6"), ("recipients", "6"), ("attempts", "8"), ("failed", "0")):
            assert re.search(rf'data-stat="{stat}"[^>]*>{value}<', page), stat
        listing = live.get("/").text
        row = listing[listing.index(f'data-campaign-id="{cid}"') :]
        assert re.search(r'data-col="sent">6<', row) and re.search(r'data-col="delivered">6<', row)
    finally:
        live.stop()


# -- rows built directly: the definitions one by one ------------------------------------------
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _campaign(session: Session, contacts: int, *, recipients: int | None = None) -> tuple[Campaign, Variant, list[int]]:
    campaign = Campaign(name="Built", recipients=contacts if recipients is None else recipients)
    session.add(campaign)
    session.flush()
    variant = Variant(campaign_id=campaign.id or 0, name="A", body="Hi https://shop.example")
    session.add(variant)
    ids: list[int] = []
    for _ in range(contacts):
        contact = Contact(phone=f"+1415555{len(ids) + 1000 * (campaign.id or 0):04d}")
        session.add(contact)
        session.flush()
        ids.append(contact.id or 0)
    session.flush()
    return campaign, variant, ids


def _message(
    session: Session,
    campaign: Campaign,
    variant: Variant,
    contact_id: int,
    status: MessageStatus,
    *,
    phase: Phase = Phase.ALL,
    round_: int | None = None,
    at: datetime = NOW,
) -> Message:
    handed_over = status != MessageStatus.QUEUED and status != MessageStatus.CANCELLED
    accepted = handed_over and not (status == MessageStatus.FAILED and phase == Phase.RETRY)  # refused at send
    message = Message(
        campaign_id=campaign.id or 0,
        contact_id=contact_id,
        variant_id=variant.id,
        phase=phase,
        phone=f"+1{contact_id:010d}",
        body="Hi",
        status=status,
        provider="fake",
        idempotency_key=idempotency_key(campaign.id or 0, phase, contact_id, retry_round=round_, variant_id=variant.id),
        error_code="30003" if status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED) else None,
        attempts=1 if handed_over else 0,
        attempted_at=at if handed_over else None,
        sent_at=at if accepted else None,
        delivered_at=at + timedelta(seconds=5) if status == MessageStatus.DELIVERED else None,
        failed_at=at + timedelta(seconds=5) if status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED) else None,
        queued_at=at,
    )
    session.add(message)
    session.flush()
    return message


def test_rounds_of_retries_never_exceed_the_audience(database_url: str) -> None:
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        campaign, variant, contacts = _campaign(session, 5)
        cid = campaign.id or 0
        # Contact 0 fails twice then is delivered on round 2; contact 1 fails on every round;
        # contact 2 is delivered at once; contact 3 goes undelivered and is retried, the retry
        # refused at send; contact 4 is never handed over (cancelled).
        day = timedelta(days=1)
        _message(session, campaign, variant, contacts[0], MessageStatus.FAILED)
        _message(session, campaign, variant, contacts[1], MessageStatus.UNDELIVERED)
        _message(session, campaign, variant, contacts[2], MessageStatus.DELIVERED)
        _message(session, campaign, variant, contacts[3], MessageStatus.UNDELIVERED)
        _message(session, campaign, variant, contacts[4], MessageStatus.CANCELLED)
        _message(session, campaign, variant, contacts[0], MessageStatus.UNDELIVERED, phase=Phase.RETRY, round_=1)
        _message(session, campaign, variant, contacts[1], MessageStatus.FAILED, phase=Phase.RETRY, round_=1)
        _message(session, campaign, variant, contacts[3], MessageStatus.FAILED, phase=Phase.RETRY, round_=1)
        _message(
            session, campaign, variant, contacts[0], MessageStatus.DELIVERED, phase=Phase.RETRY, round_=2, at=NOW + day
        )
        _message(
            session,
            campaign,
            variant,
            contacts[1],
            MessageStatus.UNDELIVERED,
            phase=Phase.RETRY,
            round_=2,
            at=NOW + day,
        )
        # A test send never counts, whatever its phone.
        _message(session, campaign, variant, contacts[2], MessageStatus.DELIVERED, phase=Phase.TEST_SEND)
    with session_scope(engine, read_only=True) as session:
        assert has_retries(session, cid)
        s = summary.summary(session, cid)
        # By the latest message: 0 delivered (round 2), 1 undelivered (round 2), 2 delivered,
        # 3 failed at send (round 1), 4 cancelled.
        assert {k: s[k] for k in ("recipients", "queued", "sent", "delivered", "undelivered", "failed")} == {
            "recipients": 5,
            "queued": 0,
            "sent": 3,
            "delivered": 2,
            "undelivered": 1,
            "failed": 1,
        }
        assert s["delivery_rate"] == round(2 / 3, 6)
        assert s["attempts"] == 9  # 4 first attempts handed over, 3 in round 1, 2 in round 2
        errors = summary.errors(session, cid)["errors"]
        assert [(e["code"], e["count"]) for e in errors] == [("30003", 2)]
        funnel = {step["name"]: step["contacts"] for step in breakdowns.funnel(session, cid)["steps"]}
        assert (funnel["sent"], funnel["delivered"]) == (3, 2)
        trend = breakdowns.trend(session, cid)["buckets"]
        # Day 1: contact 2 (the first attempts of 0, 1 and 3 are not their latest); day 2: round 2.
        assert [(b["start"][:10], b["sent"], b["delivered"]) for b in trend] == [
            ("2026-03-02", 1, 1),
            ("2026-03-03", 2, 1),
        ]
        assert sum(b["sent"] for b in trend) == s["sent"] and sum(b["delivered"] for b in trend) == s["delivered"]
        variants = variant_stats.variants(session, cid)
        row = variants["variants"][0]
        assert (row["recipients"], row["sent"], row["delivered"]) == (5, 3, 2)
        assert (variants["all_variants"]["recipients"], variants["all_variants"]["delivered"]) == (5, 2)
        # Asked for the retry phase alone: each retried contact once, by its latest round.
        retry_only = evidence.arms(session, cid, phase=Phase.RETRY)[0]
        assert (retry_only.recipients, retry_only.sent, retry_only.delivered) == (3, 2, 1)


def test_campaign_recipients_is_the_audience_even_when_more_rows_exist(database_url: str) -> None:
    """The 1,000-contact campaign that showed 1,024 recipients, in small: 10 contacts, 3 retried."""
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        campaign, variant, contacts = _campaign(session, 10)
        for i, contact in enumerate(contacts):
            _message(session, campaign, variant, contact, MessageStatus.FAILED if i < 3 else MessageStatus.DELIVERED)
        for contact in contacts[:3]:
            _message(session, campaign, variant, contact, MessageStatus.DELIVERED, phase=Phase.RETRY, round_=1)
        cid = campaign.id or 0
    with session_scope(engine, read_only=True) as session:
        s = summary.summary(session, cid)
        assert (s["recipients"], s["sent"], s["delivered"], s["failed"], s["attempts"]) == (10, 10, 10, 0, 13)
        assert s["delivery_rate"] == 1.0


def test_clicks_and_conversions_of_an_earlier_attempt_still_count(database_url: str) -> None:
    """A click or a purchase belongs to the message it came from: an earlier attempt's (reported
    undelivered, yet it reached the phone) counts for its contact, once, beside the retry's."""
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        campaign, variant, contacts = _campaign(session, 2)
        cid = campaign.id or 0
        link = Link(campaign_id=cid, variant_id=variant.id or 0, position=0, destination="https://shop.example")
        session.add(link)
        session.flush()
        first = _message(session, campaign, variant, contacts[0], MessageStatus.UNDELIVERED)
        _message(session, campaign, variant, contacts[1], MessageStatus.DELIVERED)
        retry = _message(session, campaign, variant, contacts[0], MessageStatus.DELIVERED, phase=Phase.RETRY, round_=1)
        for message, code in ((first, "early"), (retry, "later")):
            session.add(
                Click(
                    code=f"{code}{cid}",
                    campaign_id=cid,
                    message_id=message.id or 0,
                    link_id=link.id or 0,
                    contact_id=contacts[0],
                    clicked_at=NOW + timedelta(minutes=1),
                )
            )
        session.add(
            Conversion(contact_id=contacts[0], campaign_id=cid, message_id=first.id, name="purchase", revenue=9)
        )
    with session_scope(engine, read_only=True) as session:
        s = summary.summary(session, cid)
        assert (s["recipients"], s["delivered"], s["attempts"]) == (2, 2, 3)
        assert (s["clicks"]["total"], s["clicks"]["unique"], s["ctr"]) == (2, 1, 0.5)
        assert (s["conversions"], s["revenue"]) == (1, 9.0)
        row = variant_stats.variants(session, cid)["variants"][0]
        assert (row["recipients"], row["delivered"], row["unique_clicks"], row["conversions"]) == (2, 2, 1, 1)
        funnel = {step["name"]: step["contacts"] for step in breakdowns.funnel(session, cid)["steps"]}
        assert funnel == {"sent": 2, "delivered": 2, "clicked": 1, "converted": 1}


def test_the_retry_probe_reads_only_its_own_campaign(database_url: str) -> None:
    """Campaigns 1 and 12 (`c1-…`, `c12-retry…`): the probe of one never sees the other's rows."""
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        built = [_campaign(session, 1) for _ in range(12)]
        for campaign, variant, contacts in built:
            _message(session, campaign, variant, contacts[0], MessageStatus.FAILED)
        campaign, variant, contacts = built[11]
        _message(session, campaign, variant, contacts[0], MessageStatus.DELIVERED, phase=Phase.RETRY, round_=1)
        ids = [c.id or 0 for c, _, _ in built]
    assert (ids[0], ids[11]) == (1, 12)
    with session_scope(engine, read_only=True) as session:
        assert [has_retries(session, i) for i in ids] == [False] * 11 + [True]
        assert campaigns_with_retries(session, ids) == {ids[11]}
        assert summary.summary(session, ids[0])["failed"] == 1
        assert summary.summary(session, ids[11])["failed"] == 0
