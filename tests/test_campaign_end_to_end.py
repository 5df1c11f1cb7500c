"""One real campaign all the way through: HTTP API → Temporal workflow → fake provider →
delivery callbacks over HTTP → tracked link click → stats. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import func, select

from core.db import session_scope
from core.models import Click, Message
from tests.live import LiveService, wait_for

PHONES = [f"+1202555{n:04d}" for n in range(100, 130)]


def _create_contacts(live: LiveService, phones: list[str]) -> None:
    response = live.post(
        "/api/contacts", [{"phone": p, "name": f"Person {i}", "attributes": {"i": i}} for i, p in enumerate(phones)]
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"created": len(phones), "updated": 0, "invalid": []}


def test_campaign_is_sent_delivered_clicked_and_counted(live: LiveService) -> None:
    _create_contacts(live, PHONES)
    created = live.post(
        "/api/campaigns",
        {
            "name": "Black Friday",
            "provider": "fake",
            "audience": {"all": True},
            "variants": [{"name": "A", "body": "Hi {{ name }}, 30% off: https://shop.example/bf (today only)"}],
        },
    )
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert campaign["status"] == "draft"
    cid = campaign["id"]

    launched = live.post(f"/api/campaigns/{cid}/launch")
    assert launched.status_code == 202, launched.text

    stats = wait_for(lambda: (s := live.stats(cid))["delivered"] == len(PHONES) and s, what="every message delivered")
    assert stats["recipients"] == len(PHONES)
    assert stats["sent"] == len(PHONES)
    assert stats["queued"] == 0 and stats["failed"] == 0
    assert stats["delivery_rate"] == 1.0
    assert wait_for(
        lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="campaign completed"
    )

    messages = live.messages(cid)
    assert sorted(m["phone"] for m in messages) == PHONES
    first = messages[0]
    assert first["status"] == "delivered" and first["provider_message_id"].startswith("fake-")
    assert "https://shop.example/bf" not in first["body"]
    assert f"{live.url}/r/" in first["body"]
    assert first["body"].startswith("Hi Person ")
    assert first["encoding"] == "GSM-7" and first["segments"] == 1

    # Nobody got a message twice: the provider's own ledger says so.
    ledger = live.fake.ledger()
    assert Counter(entry["to"] for entry in ledger) == Counter(PHONES)

    # Open the tracked link of the first message, twice, from a phone browser.
    code_url = next(word for word in first["body"].split() if "/r/" in word)
    agent = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
    for _ in range(2):
        response = httpx.get(code_url, headers={"user-agent": agent}, follow_redirects=False)
        assert response.status_code == 302
        assert response.headers["location"] == "https://shop.example/bf"
        assert response.headers["cache-control"] == "no-store"

    stats = wait_for(lambda: (s := live.stats(cid))["clicks"]["total"] == 2 and s, what="two clicks counted")
    assert stats["clicks"] == {"total": 2, "unique": 1, "bots_total": 0, "raw_total": 2, "raw_unique": 1}
    assert stats["ctr"] == round(1 / len(PHONES), 6)
    assert stats["ctr_basis"] == "delivered"
    with session_scope(live.engine) as session:
        click = session.scalars(select(Click)).first()
        assert click is not None
        assert click.message_id == first["id"] and click.contact_id == first["contact_id"]
        assert click.os == "iOS" and click.device == "mobile"


def test_failed_deliveries_are_counted_with_their_error_codes(
    database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        plugin_config={"plugins": {"fake": {"delivery_ratio": 0.5, "seed": 3, "callback_delay_seconds": [0.01, 0.05]}}},
    )
    live.start()
    try:
        _create_contacts(live, PHONES)
        cid = live.post("/api/campaigns", {"name": "Half", "variants": [{"name": "A", "body": "Sale today"}]}).json()[
            "id"
        ]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        stats = wait_for(
            lambda: (s := live.stats(cid))["delivered"] + s["failed"] + s["undelivered"] == len(PHONES) and s,
            what="a final status for every message",
        )
        with session_scope(live.engine) as session:
            by_status = dict(session.execute(select(Message.status, func.count()).group_by(Message.status)).all())
            codes = set(session.scalars(select(Message.error_code).where(Message.status != "delivered")))
        assert stats["delivered"] == by_status.get("delivered", 0)
        assert stats["failed"] == by_status.get("failed", 0)
        assert stats["undelivered"] == by_status.get("undelivered", 0)
        assert 0 < stats["delivered"] < len(PHONES)
        assert stats["sent"] == len(PHONES)  # accepted by the provider, whatever their later fate
        assert codes <= {"30003", "30005", "30006", "30007"} and codes
        assert stats["delivery_rate"] == round(stats["delivered"] / len(PHONES), 6)
    finally:
        live.stop()


def test_opted_out_contacts_are_not_in_the_audience(live: LiveService) -> None:
    _create_contacts(live, PHONES[:5])
    with session_scope(live.engine) as session:
        from core.models import Contact, utcnow

        contact = session.scalars(select(Contact).where(Contact.phone == PHONES[0])).one()
        contact.opted_out_at = utcnow()
        session.add(contact)
    cid = live.post("/api/campaigns", {"name": "X", "variants": [{"name": "A", "body": "Hello"}]}).json()["id"]
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    wait_for(lambda: live.stats(cid)["delivered"] == 4, what="four deliveries")
    assert sorted(m["phone"] for m in live.messages(cid)) == PHONES[1:5]
