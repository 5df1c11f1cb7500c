"""/stats/variants and the evidence under it (API.md "Shapes shared by the routes", "Definitions").

An A/B campaign with a control group is built row by row through the engine: held-out contacts,
a test cohort, a remainder, retries, a test send, human and bot clicks, purchases and events of
other names (which never count). Every count is checked against an independent computation in
Python over the same rows; the statistics are checked for presence, None-ness and consistency
(they describe the test cohort whatever `?phase`), not re-derived (tests/test_ab_*.py do that).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlmodel import Session

from api.app import create_app
from core.campaigns.idempotency import idempotency_key
from core.db import make_engine, session_scope
from core.hooks.registry import load_plugins
from core.models import Campaign, Click, Contact, Conversion, Link, Message, Variant
from core.settings import Settings
from core.stats import ab, evidence
from core.stats.evidence import ArmCounts
from core.statuses import MessageStatus, Phase

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
S = MessageStatus


@dataclass
class Built:
    """What was stored, kept in plain Python so the test can count it on its own."""

    campaign_id: int
    variants: dict[str, int]  # name -> id
    event: str
    messages: list[dict[str, Any]] = field(default_factory=list)  # id, contact, variant, phase, status
    clicks: list[dict[str, Any]] = field(default_factory=list)  # message, contact, is_bot
    conversions: list[dict[str, Any]] = field(default_factory=list)  # message, contact, name, revenue


class Builder:
    def __init__(self, session: Session, campaign: Campaign, variants: list[Variant], contacts: list[int]) -> None:
        self.session, self.campaign, self.contacts = session, campaign, contacts
        self.variant = {v.name: v for v in variants}
        self.built = Built(
            campaign.id or 0,
            {v.name: v.id or 0 for v in variants},
            str((campaign.conversion or {}).get("event") or "purchase"),
        )
        self.link = Link(
            campaign_id=campaign.id or 0, variant_id=variants[0].id or 0, position=0, destination="https://shop.example"
        )
        session.add(self.link)
        session.flush()

    def message(
        self, i: int, phase: Phase, variant: str | None, status: MessageStatus, *, round_: int | None = None
    ) -> int:
        contact = self.contacts[i]
        held = phase == Phase.CONTROL
        accepted = status in (S.SENT, S.DELIVERED, S.UNDELIVERED)  # failed here: refused at send
        v = self.variant[variant] if variant else None
        message = Message(
            campaign_id=self.built.campaign_id,
            contact_id=contact,
            variant_id=v.id if v else None,
            phase=phase,
            phone=f"+1{contact:010d}",
            body="" if held else "Hi",
            status=status,
            provider="fake",
            idempotency_key=idempotency_key(
                self.built.campaign_id, phase, contact, retry_round=round_, variant_id=v.id if v else None
            ),
            attempts=0 if held else 1,
            attempted_at=None if held else NOW,
            sent_at=NOW if accepted else None,
            delivered_at=NOW + timedelta(seconds=5) if status == S.DELIVERED else None,
            failed_at=NOW + timedelta(seconds=5) if status in (S.FAILED, S.UNDELIVERED) else None,
            queued_at=NOW,
        )
        self.session.add(message)
        self.session.flush()
        row = {"id": message.id, "contact": contact, "variant": variant, "phase": str(phase), "status": str(status)}
        row["sent"] = accepted
        self.built.messages.append(row)
        return message.id or 0

    def click(self, message_id: int, *, bot: bool = False) -> None:
        contact = next(m["contact"] for m in self.built.messages if m["id"] == message_id)
        self.session.add(
            Click(
                code=f"c{message_id}-{len(self.built.clicks)}",
                campaign_id=self.built.campaign_id,
                message_id=message_id,
                link_id=self.link.id or 0,
                contact_id=contact,
                clicked_at=NOW + timedelta(minutes=1),
                is_bot=bot,
            )
        )
        self.built.clicks.append({"message": message_id, "contact": contact, "is_bot": bot})

    def convert(self, message_id: int | None, name: str, revenue: float, *, contact_index: int | None = None) -> None:
        if message_id is None:
            contact = self.contacts[contact_index or 0]
        else:
            contact = next(m["contact"] for m in self.built.messages if m["id"] == message_id)
        self.session.add(
            Conversion(
                contact_id=contact,
                campaign_id=self.built.campaign_id if message_id else None,
                message_id=message_id,
                name=name,
                revenue=revenue,
                occurred_at=NOW + timedelta(hours=1),
            )
        )
        self.built.conversions.append({"message": message_id, "contact": contact, "name": name, "revenue": revenue})


def _campaign(
    session: Session,
    *,
    variants: list[tuple[str, float, bool]],
    contacts: int,
    **settings: Any,
) -> tuple[Campaign, list[Variant], list[int]]:
    campaign = Campaign(name="Built", status="completed", **settings)
    session.add(campaign)
    session.flush()
    rows = [
        Variant(campaign_id=campaign.id or 0, name=name, body=f"{name} https://shop.example", weight=w, is_control=c)
        for name, w, c in variants
    ]
    session.add_all(rows)
    ids: list[int] = []
    for _ in range(contacts):
        contact = Contact(phone=f"+1415556{len(ids) + 100 * (campaign.id or 0):04d}")
        session.add(contact)
        session.flush()
        ids.append(contact.id or 0)
    session.flush()
    return campaign, rows, ids


AB_TEST = {"test_percent": 50, "wait_seconds": 60, "metric": "conversions", "min_sample": 1, "fallback": "hold"}
WINNER = {"variant": None, "metric": "conversions", "method": "fallback", "reason": "the wait ended", "hold": False}


def _ab_campaign_with_control(session: Session) -> Built:
    """20 contacts: 0–3 held out, 4–11 the test cohort (A 4–7, B 8–11), 12–19 the remainder
    (A 12–15, B 16–19); retries of 5, 13 and (twice) 10; a test send to 4."""
    campaign, variants, contacts = _campaign(
        session,
        variants=[("A", 50, False), ("B", 50, False)],
        contacts=20,
        control_percent=20,
        ab_test=AB_TEST,
        conversion={"event": "purchase", "window_hours": 72},
        winner=WINNER,
    )
    b = Builder(session, campaign, variants, contacts)
    control = [b.message(i, Phase.CONTROL, None, S.CANCELLED) for i in range(4)]
    test = {
        4: b.message(4, Phase.TEST, "A", S.DELIVERED),
        5: b.message(5, Phase.TEST, "A", S.FAILED),
        6: b.message(6, Phase.TEST, "A", S.DELIVERED),
        7: b.message(7, Phase.TEST, "A", S.SENT),
        8: b.message(8, Phase.TEST, "B", S.DELIVERED),
        9: b.message(9, Phase.TEST, "B", S.DELIVERED),
        10: b.message(10, Phase.TEST, "B", S.UNDELIVERED),
        11: b.message(11, Phase.TEST, "B", S.DELIVERED),
    }
    rest = {
        12: b.message(12, Phase.REMAINDER, "A", S.DELIVERED),
        13: b.message(13, Phase.REMAINDER, "A", S.UNDELIVERED),
        14: b.message(14, Phase.REMAINDER, "A", S.DELIVERED),
        15: b.message(15, Phase.REMAINDER, "A", S.DELIVERED),
        16: b.message(16, Phase.REMAINDER, "B", S.DELIVERED),
        17: b.message(17, Phase.REMAINDER, "B", S.DELIVERED),
        18: b.message(18, Phase.REMAINDER, "B", S.FAILED),
        19: b.message(19, Phase.REMAINDER, "B", S.DELIVERED),
    }
    retry5 = b.message(5, Phase.RETRY, "A", S.DELIVERED, round_=1)
    retry13 = b.message(13, Phase.RETRY, "A", S.DELIVERED, round_=1)
    b.message(10, Phase.RETRY, "B", S.FAILED, round_=1)
    b.message(10, Phase.RETRY, "B", S.DELIVERED, round_=2)
    test_send = b.message(4, Phase.TEST_SEND, "A", S.DELIVERED)

    b.click(test[4])
    b.click(test[4])  # the same contact twice: one clicker
    b.click(test[6], bot=True)  # a bot only: no clicker
    for i in (8, 9, 11):
        b.click(test[i])
    b.click(retry5)
    b.click(rest[13])  # the undelivered first attempt reached the phone after all
    b.click(retry13)  # and the retry too: still one clicker
    b.click(rest[16])
    b.click(test_send)  # a test send never counts

    b.convert(test[4], "purchase", 10)
    b.convert(test[4], "purchase", 5)  # a second purchase: 2 events, one converter
    b.convert(test[6], "page_view", 99)  # not the campaign's event
    b.convert(retry5, "purchase", 20)  # a retry row: counts under `all`, not under `test`
    b.convert(test[8], "purchase", 7)
    b.convert(test[9], "purchase", 3)
    b.convert(test[11], "purchase", 4)
    b.convert(rest[13], "purchase", 12)  # of the earlier attempt
    b.convert(rest[16], "purchase", 8)
    b.convert(rest[17], "signup", 50)  # not the campaign's event
    b.convert(control[0], "purchase", 9)
    b.convert(control[1], "purchase", 6)
    b.convert(control[1], "purchase", 1)
    b.convert(control[2], "page_view", 0)  # not the campaign's event
    b.convert(None, "purchase", 30, contact_index=19)  # attributed to nothing
    return b.built


def expected(built: Built, phase: str | None, *, reports_delivery: bool = True) -> list[ArmCounts]:
    """The evidence counted by hand: each contact once by its latest message of the phase(s);
    clicks and conversions of any of those messages; the control group whole."""
    counted = [
        m
        for m in built.messages
        if m["phase"] not in ("control", "test_send") and (phase is None or m["phase"] == phase)
    ]
    latest: dict[int, dict[str, Any]] = {}
    for m in counted:
        if m["contact"] not in latest or m["id"] > latest[m["contact"]]["id"]:
            latest[m["contact"]] = m
    by_id = {m["id"]: m for m in counted}
    held = {m["id"]: m for m in built.messages if m["phase"] == "control"}

    def conversions(ids: dict[int, dict[str, Any]], variant: str | None) -> tuple[int, int, float, float]:
        mine = [
            c
            for c in built.conversions
            if c["name"] == built.event
            and c["message"] in ids
            and (variant is None or ids[c["message"]]["variant"] == variant)
        ]
        per_contact: dict[int, float] = defaultdict(float)
        for c in mine:
            per_contact[c["contact"]] += c["revenue"]
        return len(per_contact), len(mine), sum(per_contact.values()), sum(r * r for r in per_contact.values())

    arms = []
    for name in built.variants:
        rows = [m for m in latest.values() if m["variant"] == name]
        sent = sum(1 for m in rows if m["sent"])
        delivered = sum(1 for m in rows if m["status"] == "delivered")
        clickers = {
            c["contact"]
            for c in built.clicks
            if not c["is_bot"] and c["message"] in by_id and by_id[c["message"]]["variant"] == name
        }
        converters, events, revenue, revenue_sq = conversions(by_id, name)
        arms.append(
            ArmCounts(
                variant=name,
                is_control=False,
                recipients=len(rows),
                sent=sent,
                delivered=delivered,
                basis=delivered if reports_delivery else sent,
                unique_clicks=len(clickers),
                converters=converters,
                conversion_events=events,
                revenue=revenue,
                revenue_sq=revenue_sq,
            )
        )
    if held:
        converters, events, revenue, revenue_sq = conversions(held, None)
        recipients = len({m["contact"] for m in held.values()})
        arms.append(
            ArmCounts(
                variant="control",
                is_control=True,
                recipients=recipients,
                basis=recipients,
                converters=converters,
                conversion_events=events,
                revenue=revenue,
                revenue_sq=revenue_sq,
            )
        )
    return arms


def itt_expected(built: Built, phase: str | None) -> dict[str, float]:
    """Each arm's conversion rate on an intention-to-treat basis, by hand: every contact of the arm
    (its counted messages of the phase; the control group whole) converts when it has an event of
    the campaign's name within 72 h after its touch, whatever the event is attributed to. Every row
    here was sent or queued at NOW and every event happened an hour later: all inside the window."""
    arms: dict[str, set[int]] = defaultdict(set)
    for m in built.messages:
        if m["phase"] == "control":
            arms["control"].add(m["contact"])
        elif m["phase"] != "test_send" and (phase is None or m["phase"] == phase) and m["variant"]:
            arms[m["variant"]].add(m["contact"])
    buyers = {c["contact"] for c in built.conversions if c["name"] == built.event}
    return {name: round(len(people & buyers) / len(people), 6) for name, people in arms.items()}


def _row_counts(arm: ArmCounts) -> dict[str, Any]:
    """What the route shows of an arm: `ctr` over delivered, `conversion_rate` over recipients."""
    return {
        "variant": arm.variant,
        "is_control": arm.is_control,
        "recipients": arm.recipients,
        "sent": arm.sent,
        "delivered": arm.delivered,
        "unique_clicks": arm.unique_clicks,
        "ctr": None if arm.is_control else round(arm.unique_clicks / arm.delivered, 6) if arm.delivered else 0.0,
        "conversions": arm.converters,
        "conversion_events": arm.conversion_events,
        "conversion_rate": round(arm.converters / arm.recipients, 6) if arm.recipients else 0.0,
        "revenue": arm.revenue,
    }


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient[Any]]:
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={})
    app = create_app(settings, registry=registry)
    with TestClient(app=app) as test_client:
        yield test_client
    registry.close()
    app.state.engine.dispose()


def test_the_hand_counted_numbers_are_the_evidence(database_url: str) -> None:
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        built = _ab_campaign_with_control(session)
    # The hand count itself, pinned: the story in the builder's docstring.
    by_hand = {a.variant: a for a in expected(built, None)}
    assert (by_hand["A"].recipients, by_hand["A"].sent, by_hand["A"].delivered) == (8, 8, 7)
    assert (by_hand["A"].unique_clicks, by_hand["A"].converters, by_hand["A"].conversion_events) == (3, 3, 4)
    assert (by_hand["A"].revenue, by_hand["A"].revenue_sq) == (47.0, 15**2 + 20**2 + 12**2)
    assert (by_hand["B"].recipients, by_hand["B"].sent, by_hand["B"].delivered) == (8, 7, 7)
    assert (by_hand["B"].unique_clicks, by_hand["B"].converters, by_hand["B"].revenue) == (4, 4, 22.0)
    control = by_hand["control"]
    assert (control.recipients, control.converters, control.conversion_events, control.revenue) == (4, 2, 3, 16.0)
    assert control.revenue_sq == 9**2 + 7**2
    with session_scope(engine, read_only=True) as session:
        for asked, phase in ((None, None), ("all", None), ("test", "test"), ("remainder", "remainder")):
            assert evidence.arms(session, built.campaign_id, phase=asked) == expected(built, phase), asked
        # A retry phase alone: each retried contact once, by its latest round.
        assert evidence.arms(session, built.campaign_id, phase=Phase.RETRY) == expected(built, "retry")
        # Without delivery reports the basis is sent.
        assert evidence.arms(session, built.campaign_id, reports_delivery=False) == expected(
            built, None, reports_delivery=False
        )
        together = evidence.overall(session, built.campaign_id)
        arms = [a for a in expected(built, None) if not a.is_control]
        for key in ("recipients", "sent", "delivered", "unique_clicks", "converters", "conversion_events", "revenue"):
            assert getattr(together, key) == sum(getattr(a, key) for a in arms), key
        assert together.revenue_sq == sum(a.revenue_sq for a in arms)
        test_together = evidence.overall(session, built.campaign_id, phase="test")
        assert test_together.recipients == 8 and test_together.converters == 4  # 4, 8, 9, 11 (5's was a retry)


def test_the_route_counts_the_phase_asked_and_states_the_test_cohorts_statistics(
    database_url: str, client: TestClient[Any]
) -> None:
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        built = _ab_campaign_with_control(session)
    cid = built.campaign_id
    bodies = {}
    for asked, phase in ((None, None), ("all", None), ("test", "test"), ("remainder", "remainder")):
        response = client.get(f"/api/campaigns/{cid}/stats/variants", params={"phase": asked} if asked else {})
        assert response.status_code == 200, response.text
        body = bodies[asked] = response.json()
        assert body["phase"] == (asked or "all") and body["evidence"] == "test" and body["metric"] == "conversions"
        want = expected(built, phase)
        shown = [{k: row[k] for k in _row_counts(want[0])} for row in body["variants"]]
        assert shown == [_row_counts(a) for a in want], asked
        # "All variants": each contact once, never the control.
        assert set(body["all_variants"]) == set(_row_counts(want[0])) - {"variant", "is_control"}
        sendable = [a for a in want if not a.is_control]
        for key, attr in (("recipients", "recipients"), ("delivered", "delivered"), ("conversions", "converters")):
            assert body["all_variants"][key] == sum(getattr(a, attr) for a in sendable), (asked, key)
        assert body["winner"]["method"] == "fallback" and body["winner"]["reason"] == "the wait ended"

    # The statistics describe the test cohort whatever the phase shown.
    stats_keys = ("chance_to_win", "expected_loss", "interval", "p_value")
    figures = {asked: [{k: r[k] for k in stats_keys} for r in body["variants"]] for asked, body in bodies.items()}
    assert figures["all"] == figures["test"] == figures["remainder"] == figures[None]
    with session_scope(engine, read_only=True) as session:
        test_arms = [a for a in evidence.arms(session, cid, phase="test") if not a.is_control]
    by_variant = {s.variant: s for s in ab.compare(test_arms, "conversions")}
    rows = {r["variant"]: r for r in bodies["all"]["variants"]}
    for name in ("A", "B"):
        assert rows[name]["chance_to_win"] == by_variant[name].chance_to_win
        assert rows[name]["expected_loss"] == by_variant[name].expected_loss
        assert rows[name]["interval"] == list(by_variant[name].interval or ())
        assert rows[name]["interval"][0] <= rows[name]["interval"][1]
    assert abs(rows["A"]["chance_to_win"] + rows["B"]["chance_to_win"] - 1) < 1e-3

    # The control row: the held-out contacts, nothing sent, no statistics, no uplift of its own.
    control = rows["control"]
    assert control["is_control"] is True
    assert (control["recipients"], control["conversions"], control["revenue"]) == (4, 2, 16.0)
    assert control["conversion_rate"] == 0.5
    assert (control["sent"], control["delivered"], control["unique_clicks"]) == (0, 0, 0)
    assert all(control[k] is None for k in stats_keys) and "uplift" not in control
    assert control["ctr"] is None  # sent nothing: no click-through rate at all
    # Every other row's uplift over the control, in every phase, on the row's contacts, counted on an
    # intention-to-treat basis: every contact of the row with a purchase in its window, whoever the
    # purchase is attributed to (contact 19's unattributed purchase counts for B).
    for asked, body in bodies.items():
        ctl = next(r for r in body["variants"] if r["is_control"])
        assert ctl == control  # the control group is always the whole group
        itt = itt_expected(built, None if asked in (None, "all") else asked)
        for row in (r for r in body["variants"] if not r["is_control"]):
            uplift = row["uplift"]
            assert set(uplift) == {"absolute", "relative", "interval", "chance_better"}
            assert abs(uplift["absolute"] - (itt[row["variant"]] - itt["control"])) < 1e-5, asked
            assert abs(uplift["relative"] - uplift["absolute"] / itt["control"]) < 1e-4, asked
            low, high = uplift["interval"]
            assert low <= uplift["absolute"] <= high and 0 <= uplift["chance_better"] <= 1

    # The sample-ratio check over the test cohort (4 and 4 against 50/50: fine).
    for body in bodies.values():
        assert body["srm"]["ok"] is True and 0 < body["srm"]["p_value"] <= 1
    assert bodies["all"]["srm"] == bodies["remainder"]["srm"]

    unknown = client.get(f"/api/campaigns/{cid}/stats/variants", params={"phase": "retry"})
    assert unknown.status_code == 400
    detail = unknown.json()["detail"]
    assert "phase" in detail and all(name in detail for name in ("test", "remainder", "all")) and "'retry'" in detail
    assert client.get("/api/campaigns/999999/stats/variants").status_code == 404


def test_one_variant_compares_nothing_and_without_a_control_there_is_no_uplift(
    database_url: str, client: TestClient[Any]
) -> None:
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        campaign, variants, contacts = _campaign(session, variants=[("Only", 1, False)], contacts=3)
        b = Builder(session, campaign, variants, contacts)
        first = b.message(0, Phase.ALL, "Only", S.DELIVERED)
        b.message(1, Phase.ALL, "Only", S.DELIVERED)
        b.message(2, Phase.ALL, "Only", S.FAILED)
        b.click(first)
        b.convert(first, "purchase", 5)
        built = b.built
    body = client.get(f"/api/campaigns/{built.campaign_id}/stats/variants").json()
    assert body["evidence"] == "all" and body["phase"] == "all" and body["winner"] is None
    (row,) = body["variants"]
    assert {k: row[k] for k in _row_counts(expected(built, None)[0])} == _row_counts(expected(built, None)[0])
    assert (row["recipients"], row["delivered"], row["unique_clicks"], row["ctr"]) == (3, 2, 1, 0.5)
    assert (row["conversions"], row["conversion_rate"]) == (1, round(1 / 3, 6))
    assert all(row[k] is None for k in ("chance_to_win", "expected_loss", "interval", "p_value"))
    assert "uplift" not in row
    assert body["srm"] == {"p_value": None, "ok": True}


def test_without_an_ab_test_the_statistics_describe_the_whole_audience(
    database_url: str, client: TestClient[Any]
) -> None:
    """Two variants sent to everybody, a variant marked as control holding its share out."""
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        campaign, variants, contacts = _campaign(
            session, variants=[("A", 1, False), ("Hold", 1, True), ("B", 1, False)], contacts=9
        )
        b = Builder(session, campaign, variants, contacts)
        ids = {i: b.message(i, Phase.ALL, "A" if i < 3 else "B", S.DELIVERED) for i in range(6)}
        held = [b.message(i, Phase.CONTROL, "Hold", S.CANCELLED) for i in range(6, 9)]
        for i in (0, 1, 3):
            b.convert(ids[i], "purchase", 10)
        b.convert(held[0], "purchase", 10)
        built = b.built
    body = client.get(f"/api/campaigns/{built.campaign_id}/stats/variants").json()
    assert body["evidence"] == "all"
    # The control row takes the place of the variant marked as control.
    assert [(r["variant"], r["is_control"]) for r in body["variants"]] == [("A", False), ("Hold", True), ("B", False)]
    rows = {r["variant"]: r for r in body["variants"]}
    assert (rows["A"]["conversions"], rows["B"]["conversions"], rows["Hold"]["conversions"]) == (2, 1, 1)
    assert rows["Hold"]["recipients"] == 3 and rows["Hold"]["sent"] == 0
    assert body["all_variants"]["recipients"] == 6 and body["all_variants"]["conversions"] == 3
    assert all(rows[n]["chance_to_win"] is not None for n in ("A", "B")) and rows["Hold"]["chance_to_win"] is None
    assert abs(rows["A"]["chance_to_win"] + rows["B"]["chance_to_win"] - 1) < 1e-3
    with session_scope(engine, read_only=True) as session:
        whole = [a for a in evidence.arms(session, built.campaign_id) if not a.is_control]
    chances = [s.chance_to_win for s in ab.compare(whole, "ctr")]
    assert chances == [rows["A"]["chance_to_win"], rows["B"]["chance_to_win"]]
    for name in ("A", "B"):
        absolute = rows[name]["uplift"]["absolute"]
        assert abs(absolute - (rows[name]["conversion_rate"] - rows["Hold"]["conversion_rate"])) < 1e-5
    assert body["srm"]["p_value"] is not None and body["srm"]["ok"] is True


# -- review of issue 15: the uplift on an intention-to-treat basis, figures, the dashboard -------
def test_the_uplift_counts_every_contact_of_each_side_within_its_window(
    database_url: str, client: TestClient[Any]
) -> None:
    """Treated contacts whose message failed or was never sent stay in the denominator, and their
    purchases (attributed elsewhere or to nothing) count, as do purchases a later campaign took by
    last touch; only purchases inside [touch, touch + window] count, on both sides."""
    hour = timedelta(hours=1)
    window = 24.0
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        campaign, variants, contacts = _campaign(
            session,
            variants=[("A", 1, False)],
            contacts=16,
            control_percent=40,
            conversion={"event": "purchase", "window_hours": window},
        )
        later, later_variants, _ = _campaign(session, variants=[("L", 1, False)], contacts=0)
        cid, a = campaign.id or 0, variants[0].id or 0
        # (contact index, phase, status, sent_at, attempted_at, queued_at, touched_at)
        plan: list[tuple[int, Phase, MessageStatus, Any, Any, Any, Any]] = [
            (0, Phase.ALL, S.DELIVERED, NOW, NOW, NOW - hour, None),
            (1, Phase.ALL, S.DELIVERED, NOW + 2 * hour, NOW + 2 * hour, NOW - hour, None),  # rate-limited, later
            (2, Phase.ALL, S.DELIVERED, NOW, NOW, NOW - hour, None),
            (3, Phase.ALL, S.FAILED, None, NOW, NOW - hour, None),  # refused at send
            (4, Phase.ALL, S.CANCELLED, None, None, NOW - hour, None),  # the campaign was cancelled
            (5, Phase.ALL, S.DELIVERED, NOW, NOW, NOW - hour, None),
            (6, Phase.ALL, S.DELIVERED, NOW, NOW, NOW - hour, None),
            (7, Phase.ALL, S.DELIVERED, NOW, NOW, NOW - hour, None),
            (8, Phase.ALL, S.FAILED, None, NOW, NOW - hour, None),
            (9, Phase.ALL, S.DELIVERED, NOW, NOW, NOW - hour, None),
            (10, Phase.CONTROL, S.CANCELLED, None, None, NOW - hour, NOW),
            (11, Phase.CONTROL, S.CANCELLED, None, None, NOW - hour, NOW + 2 * hour),
            (12, Phase.CONTROL, S.CANCELLED, None, None, NOW - hour, NOW),
            (13, Phase.CONTROL, S.CANCELLED, None, None, NOW - hour, None),  # its batch never sent
            (14, Phase.CONTROL, S.CANCELLED, None, None, NOW - hour, NOW),
            (15, Phase.CONTROL, S.CANCELLED, None, None, NOW - hour, NOW),
        ]
        ids: dict[int, int] = {}
        for i, phase, status, sent, attempted, queued, touched in plan:
            held = phase == Phase.CONTROL
            message = Message(
                campaign_id=cid,
                contact_id=contacts[i],
                variant_id=None if held else a,
                phase=phase,
                phone=f"+1{contacts[i]:010d}",
                body="" if held else "Hi",
                status=status,
                provider="fake",
                idempotency_key=idempotency_key(cid, phase, contacts[i]),
                attempts=1 if attempted else 0,
                attempted_at=attempted,
                sent_at=sent,
                delivered_at=sent + timedelta(seconds=5) if sent else None,
                queued_at=queued,
                touched_at=touched,
            )
            session.add(message)
            session.flush()
            ids[i] = message.id or 0
        touch = {i: touched or sent or attempted or queued for i, _, _, sent, attempted, queued, touched in plan}
        other = Message(
            campaign_id=later.id or 0,
            contact_id=contacts[6],
            variant_id=later_variants[0].id,
            phone="+1",
            body="Later",
            status=S.DELIVERED,
            provider="fake",
            idempotency_key=f"later-{contacts[6]}",
            sent_at=NOW + 3 * hour,
        )
        session.add(other)
        session.flush()
        # (contact index, name, when, attributed to: this campaign's row | the later campaign | nothing)
        events = [
            (0, "purchase", NOW + hour, "mine"),
            (0, "purchase", NOW + 5 * hour, "mine"),  # a second purchase: one converter
            (1, "purchase", NOW + 3 * hour, "mine"),
            (2, "purchase", NOW + 30 * hour, None),  # outside the window
            (3, "purchase", NOW + hour, None),  # a failed message's contact still bought
            (4, "purchase", NOW - 2 * hour, None),  # before its touch (queued at NOW − 1 h)
            (5, "signup", NOW + hour, None),  # not the campaign's event
            (6, "purchase", NOW + 4 * hour, "later"),  # the later campaign took it by last touch
            (9, "purchase", NOW + window * hour, "mine"),  # on the window's last instant
            (10, "purchase", NOW + hour, "mine"),
            (11, "purchase", NOW + hour, None),  # before its touch (NOW + 2 h)
            (13, "purchase", NOW + 2 * hour, None),  # touched at its snapshot
            (14, "purchase", NOW + 25 * hour, None),  # outside the window
        ]
        for i, name, when, owner in events:
            counted = name == "purchase" and owner is not None
            session.add(
                Conversion(
                    contact_id=contacts[i],
                    campaign_id=(cid if owner == "mine" else later.id) if counted else None,
                    message_id=(ids[i] if owner == "mine" else other.id) if counted else None,
                    name=name,
                    revenue=10,
                    occurred_at=when,
                )
            )

    # The right answer, counted here: each side's contacts with a purchase in [touch, touch + 24 h].
    def rate(side: list[int]) -> float:
        bought = {
            i
            for i, name, when, _ in events
            if i in side and name == "purchase" and touch[i] <= when <= touch[i] + timedelta(hours=window)
        }
        return len(bought) / len(side)

    treated, held_out = list(range(10)), list(range(10, 16))
    assert (rate(treated), rate(held_out)) == (0.5, 2 / 6)  # 0, 1, 3, 6, 9 and 10, 13
    body = client.get(f"/api/campaigns/{cid}/stats/variants").json()
    rows = {r["variant"]: r for r in body["variants"]}
    uplift = rows["A"]["uplift"]
    assert abs(uplift["absolute"] - (rate(treated) - rate(held_out))) < 1e-9
    assert abs(uplift["relative"] - (rate(treated) - rate(held_out)) / rate(held_out)) < 1e-9
    # The control row shows those counts; the variant row keeps this campaign's attributed conversions.
    assert (rows["control"]["recipients"], rows["control"]["conversions"]) == (6, 2)
    assert rows["control"]["conversion_rate"] == round(2 / 6, 6) and rows["control"]["ctr"] is None
    assert (rows["A"]["recipients"], rows["A"]["conversions"]) == (10, 3)  # 0, 1, 9 attributed to A
    with session_scope(engine, read_only=True) as session:
        itt = evidence.intention_to_treat(session, cid)
    assert (itt["A"].recipients, itt["A"].converters, itt["A"].conversion_events) == (10, 5, 6)
    assert (itt["control"].converters, itt["control"].revenue) == (2, 20.0)


def test_variants_placed_by_attribute_are_not_compared(database_url: str, client: TestClient[Any]) -> None:
    """Contacts placed by an attribute are no random split: no chance to win, interval or p-value;
    the test cohort of an A/B campaign is split by weight whatever the attribute, and keeps them."""
    engine = make_engine(database_url)
    cids = {}
    for with_test in (False, True):
        with session_scope(engine) as session:
            campaign, variants, contacts = _campaign(
                session,
                variants=[("en", 1, False), ("de", 1, False)],
                contacts=8,
                variant_by_attribute="language",
                ab_test={**AB_TEST, "metric": "ctr"} if with_test else None,
            )
            b = Builder(session, campaign, variants, contacts)
            phase = Phase.TEST if with_test else Phase.ALL
            for i in range(8):
                message = b.message(i, phase, "en" if i < 4 else "de", S.DELIVERED)
                if i in (0, 1, 4):
                    b.click(message)
            cids[with_test] = b.built.campaign_id
    stats_keys = ("chance_to_win", "expected_loss", "interval", "p_value")
    by_attribute = client.get(f"/api/campaigns/{cids[False]}/stats/variants").json()
    assert all(row[k] is None for row in by_attribute["variants"] for k in stats_keys)
    assert [row["unique_clicks"] for row in by_attribute["variants"]] == [2, 1]  # the counts stay
    tested = client.get(f"/api/campaigns/{cids[True]}/stats/variants").json()
    assert all(row[k] is not None for row in tested["variants"] for k in ("chance_to_win", "interval"))


def test_the_dashboard_says_held_and_shows_revenue_intervals_as_money(
    database_url: str, client: TestClient[Any]
) -> None:
    from api.dashboard import _decision

    engine = make_engine(database_url)
    with session_scope(engine) as session:
        campaign, variants, contacts = _campaign(
            session,
            variants=[("A", 1, False), ("B", 1, False)],
            contacts=6,
            ab_test={**AB_TEST, "metric": "revenue"},
        )
        b = Builder(session, campaign, variants, contacts)
        for i in range(6):
            message = b.message(i, Phase.TEST, "A" if i < 3 else "B", S.DELIVERED)
            b.convert(message, "purchase", 12.5 * (i + 1))
        cid = b.built.campaign_id
    held = "the rest of the audience is held"
    # record_winner stores `hold` with the decision; the page reads it.
    from workflows.activities import CampaignActivities
    from workflows.inputs import DecisionResult, WinnerInput

    decision = DecisionResult(decided=True, variant=None, hold=True, method="fallback", reason="no winner in time")
    no_plugins: Any = None  # record_winner uses no plugin
    CampaignActivities(engine, no_plugins).record_winner(WinnerInput(campaign_id=cid, decision=decision))
    with session_scope(engine) as session:
        stored = session.get(Campaign, cid)
        assert stored is not None and stored.winner is not None and stored.winner["hold"] is True
        stored.status = "held"
        session.add(stored)
    page = client.get(f"/campaigns/{cid}").text
    assert held in page and "every variant by weight" not in page
    # A winner stored before `hold` was: inferred from the campaign's status.
    old = {"variant": None, "metric": "ctr", "method": "fallback", "reason": "r"}
    assert held in _decision(old, "held") and "by weight" in _decision(old, "completed")
    assert "by weight" in _decision({**old, "hold": False}, "running")

    # metric revenue: the intervals are revenue per recipient, shown as money, not percentages.
    body = client.get(f"/api/campaigns/{cid}/stats/variants").json()
    interval = next(r["interval"] for r in body["variants"] if r["variant"] == "A")
    assert interval is not None and interval[1] > 1  # money, not a fraction
    cell = page.split('data-variant="A"', 1)[1].split('data-col="interval">', 1)[1].split("</td>", 1)[0]
    assert "%" not in cell and f"{interval[0]:,.2f}" in cell and f"{interval[1]:,.2f}" in cell
