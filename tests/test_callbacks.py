"""Delivery callbacks over HTTP: many at once, shuffled and repeated; malformed ones refused whole;
unknown ids kept and flagged; callbacks that beat the send's record applied once it is written."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from core.db import make_engine, session_scope
from core.delivery.sending import BatchOutcome, record_results
from core.delivery.status import RANK, unknown_events
from core.hooks.contracts import SendResult
from core.models import Campaign, Contact, Message, Reply, StatusEvent, utcnow
from core.stats.summary import errors as error_stats
from tests.live import LiveService

CODES = {
    "undelivered": ("30003", "Unreachable destination handset"),
    "failed": ("30005", "Unknown destination handset"),
}


def _campaign(engine: Engine, count: int, *, with_ids: int, prefix: str = "cb") -> tuple[int, list[int]]:
    """A running campaign of `count` messages; the first `with_ids` are `sent` with provider ids, the
    rest still `sending` (the provider accepted them, the sender has not recorded it yet)."""
    now = utcnow()
    with session_scope(engine) as session:
        campaign = Campaign(name="callbacks", provider="fake", status="running", recipients=count)
        session.add(campaign)
        session.flush()
        cid = campaign.id or 0
        session.execute(insert(Contact), [{"phone": f"+1202556{i:04d}", "attributes": {}} for i in range(count)])
        contacts = dict(session.execute(select(Contact.phone, Contact.id)).all())
        session.execute(
            insert(Message),
            [
                {
                    "campaign_id": cid,
                    "contact_id": contacts[f"+1202556{i:04d}"],
                    "phone": f"+1202556{i:04d}",
                    "body": "Hi",
                    "provider": "fake",
                    "idempotency_key": f"{prefix}-{i}",
                    "status": "sent" if i < with_ids else "sending",
                    "provider_message_id": f"{prefix}-{i}" if i < with_ids else None,
                    "sent_at": now if i < with_ids else None,
                    "attempted_at": now,
                    "attempts": 1,
                }
                for i in range(count)
            ],
        )
        ids = list(session.scalars(select(Message.id).where(Message.campaign_id == cid).order_by(Message.id)))
    return cid, ids


def _post_all(url: str, bodies: list[dict[str, Any]], workers: int = 24) -> list[tuple[int, str]]:
    """POST every callback, `workers` at a time; returns (status, ids it did not match) per callback."""
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=workers)) as client:

        def post(body: dict[str, Any]) -> tuple[int, str]:
            response = client.post("/webhooks/fake/status", json=body)
            return response.status_code, response.headers.get("x-textpulse-unmatched", "")

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(post, bodies))


def test_10k_shuffled_duplicated_concurrent_callbacks_end_exact_and_never_go_backwards(live: LiveService) -> None:
    count, late = 4167, 417  # 8334 callbacks + 20 % repeated = 10 000; 10 % arrive before the send is recorded
    cid, ids = _campaign(live.engine, count, with_ids=count - late)
    rng = random.Random(20261123)
    final: dict[str, str] = {}
    callbacks: list[dict[str, Any]] = []
    for i in range(count):
        pid = f"cb-{i}"
        final[pid] = rng.choices(["delivered", "undelivered", "failed"], weights=[8, 1, 1])[0]
        callbacks.append({"message_id": pid, "status": "sent"})
        last: dict[str, Any] = {"message_id": pid, "status": final[pid]}
        if final[pid] in CODES:
            last["error_code"], last["error_text"] = CODES[final[pid]]
        callbacks.append(last)
    callbacks += rng.sample(callbacks, 1666)
    rng.shuffle(callbacks)
    assert len(callbacks) == 10_000

    # The first thousand arrive before the sender recorded the late ones' provider ids; then it
    # records them, 50 at a time, while the other nine thousand pour in.
    def record_late() -> None:
        for start in range(count - late, count, 50):
            results = [
                SendResult(ids[i], True, provider_message_id=f"cb-{i}") for i in range(start, min(start + 50, count))
            ]
            record_results(live.engine, "fake", results, BatchOutcome())

    early = _post_all(live.url, callbacks[:1000])
    recorder = threading.Thread(target=record_late)
    recorder.start()
    answers = early + _post_all(live.url, callbacks[1000:])
    recorder.join()
    assert Counter(status for status, _ in answers) == {200: 10_000}
    late_ids = {f"cb-{i}" for i in range(count - late, count)}
    assert [unmatched for _, unmatched in early if unmatched] == [
        c["message_id"] for c in callbacks[:1000] if c["message_id"] in late_ids
    ]

    expected = Counter(final.values())
    stats = live.stats(cid)
    assert (stats["sent"], stats["delivered"], stats["undelivered"], stats["failed"], stats["queued"]) == (
        count,
        expected["delivered"],
        expected["undelivered"],
        expected["failed"],
        0,
    )
    with session_scope(live.engine) as session:
        assert session.scalar(select(func.count()).select_from(StatusEvent)) == 10_000
        unapplied = select(func.count()).select_from(StatusEvent).where(StatusEvent.applied.is_(False))
        assert session.scalar(unapplied) == 0
        rows = session.scalars(select(Message).where(Message.campaign_id == cid))
        messages = {m.provider_message_id: m for m in rows}
        moves: dict[int, list[str]] = {}
        for message_id, status in session.execute(
            select(StatusEvent.message_id, StatusEvent.status)
            .where(StatusEvent.changed.is_(True))
            .order_by(StatusEvent.id)
        ):
            moves.setdefault(message_id, []).append(status)
    for pid, status in final.items():
        message = messages[pid]
        assert message.status == status, pid
        assert (message.error_code, message.error_text) == CODES.get(status, (None, None)), pid
        assert message.sent_at is not None
        assert (message.delivered_at is not None) == (status == "delivered")
        # The moves that changed the message went only forward, and ended where it is.
        ranks = [RANK[s] for s in moves[message.id or 0]]
        assert ranks == sorted(set(ranks)) and moves[message.id or 0][-1] == status, (pid, moves[message.id or 0])


def test_malformed_callbacks_are_refused_clearly_and_nothing_is_stored(live: LiveService) -> None:
    _campaign(live.engine, 1, with_ids=1, prefix="m")
    url = f"{live.url}/webhooks/fake/status"
    json_type = {"content-type": "application/json"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {"status": "delivered"}}, 400, "field 'message_id' is required"),
        ({"json": {"message_id": "m-0"}}, 400, "field 'status' is required"),
        ({"json": {"message_id": ["m-0"], "status": "delivered"}}, 400, "field 'message_id' must be a string"),
        ({"json": {"message_id": "m-0", "status": {"x": 1}}}, 400, "field 'status' must be a string"),
        (
            {"json": {"message_id": "m-0", "status": 5}},
            400,
            "field 'status' must be one of queued, sending, sent, delivered, undelivered, failed, cancelled, got '5'",
        ),
        ({"json": {"message_id": "m-0", "status": "exploded"}}, 400, "got 'exploded'"),
        (
            {"json": {"message_id": "m-0", "status": "delivered", "timestamp": "yesterday"}},
            400,
            "field 'timestamp' is not an ISO 8601 time: 'yesterday'",
        ),
        (
            {"json": {"message_id": "m" * 101, "status": "delivered"}},
            400,
            "the message id is longer than 100 characters",
        ),
        (
            {"json": {"message_id": "m-0", "status": "failed", "error_code": "E" * 41}},
            400,
            "the error code is longer than 40 characters",
        ),
        ({"json": ["m-0", "delivered"]}, 400, "body must be a JSON object"),
        ({"content": b'{"message_id": "m-0", "status": ', "headers": json_type}, 400, "body is not valid JSON"),
        (
            {"content": b'{"message_id": "m-0", "status": "delivered"}', "headers": {"content-type": "text/plain"}},
            415,
            "expected application/json, got text/plain",
        ),
        ({"content": b'{"message_id": "m-0", "status": "delivered"}'}, 415, "a Content-Type header is required"),
        ({"content": b"{" + b" " * 70_000 + b"}", "headers": json_type}, 413, "webhooks take at most 64000"),
        (
            {
                "content": iter([b'{"message_id": "m-0",', b" " * 70_000, b'"status": "delivered"}']),
                "headers": json_type,
            },
            413,
            "the body is over 64000 bytes",
        ),
    ]
    for kwargs, status, detail in cases:
        response = httpx.post(url, timeout=30, **kwargs)
        assert response.status_code == status, (kwargs.get("json"), response.text)
        body = response.json()
        assert body["status_code"] == status and detail in body["detail"], (detail, body)
    unknown = httpx.post(f"{live.url}/webhooks/nope/status", json={"message_id": "m-0", "status": "sent"})
    assert (unknown.status_code, unknown.json()["detail"]) == (404, "no provider named 'nope' is enabled")
    inbound = httpx.post(f"{live.url}/webhooks/fake/inbound", json={"from": "+12025560000", "to": "+1555"})
    assert (inbound.status_code, inbound.json()["detail"]) == (400, "field 'body' is required")
    inbound = httpx.post(f"{live.url}/webhooks/fake/inbound", data={"from": "+12025560000", "body": "x"})
    assert inbound.status_code == 415
    with session_scope(live.engine) as session:
        assert session.scalar(select(func.count()).select_from(StatusEvent)) == 0
        assert session.scalar(select(func.count()).select_from(Reply)) == 0
        assert session.scalars(select(Message.status)).all() == ["sent"]


def test_an_unknown_message_id_is_stored_answered_200_flagged_and_applied_if_it_turns_up(live: LiveService) -> None:
    _, ids = _campaign(live.engine, 2, with_ids=1, prefix="u")
    response = live.post("/webhooks/fake/status", {"message_id": "u-1", "status": "delivered"})
    assert response.status_code == 200 and response.content == b""
    assert (
        response.headers["x-textpulse-stored"],
        response.headers["x-textpulse-changed"],
        response.headers["x-textpulse-unmatched"],
    ) == ("1", "0", "u-1")
    never = live.post("/webhooks/fake/status", {"message_id": "nobody-sent-this", "status": "failed"})
    assert never.status_code == 200 and never.headers["x-textpulse-unmatched"] == "nobody-sent-this"
    sneaky = live.post("/webhooks/fake/status", {"message_id": "x\r\nSet-Cookie: a=b", "status": "failed"})
    assert sneaky.status_code == 200 and sneaky.headers["x-textpulse-unmatched"] == "x??Set-Cookie: a=b"
    assert "set-cookie" not in sneaky.headers
    with session_scope(live.engine) as session:
        assert [(e.provider_message_id, e.status) for e in unknown_events(session, provider="fake")] == [
            ("x\r\nSet-Cookie: a=b", "failed"),
            ("nobody-sent-this", "failed"),
            ("u-1", "delivered"),
        ]
    # The send's answer is recorded after its callback: the waiting callback is applied then.
    record_results(live.engine, "fake", [SendResult(ids[1], True, provider_message_id="u-1")], BatchOutcome())
    with session_scope(live.engine) as session:
        message = session.get(Message, ids[1])
        assert message is not None and message.status == "delivered" and message.delivered_at is not None
        assert [e.provider_message_id for e in unknown_events(session)] == ["x\r\nSet-Cookie: a=b", "nobody-sent-this"]
    ok = live.post("/webhooks/fake/status", {"message_id": "u-0", "status": "sent"})  # a duplicate: no change
    assert (ok.headers["x-textpulse-stored"], ok.headers["x-textpulse-changed"]) == ("1", "0")


def test_stats_errors_count_failed_and_undelivered_messages_per_code(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        cid, ids = _campaign(engine, 8, with_ids=8, prefix="e")
        rows = [
            ("failed", "30007", "Message filtered by carrier"),
            ("undelivered", "30007", "Filtered"),
            ("failed", "30007", "Message filtered by carrier"),
            ("failed", "21211", "Invalid 'To' phone number"),
            ("failed", None, None),
            ("delivered", "30034", "Delivered despite a warning"),
            ("sent", None, None),
        ]
        when = datetime.now(UTC) - timedelta(minutes=5)
        with session_scope(engine) as session:
            for message_id, (status, code, text) in zip(ids, rows, strict=False):
                message = session.get(Message, message_id)
                assert message is not None
                message.status, message.error_code, message.error_text, message.failed_at = status, code, text, when
            test_send = session.get(Message, ids[7])
            assert test_send is not None
            test_send.phase, test_send.status, test_send.error_code = "test_send", "failed", "21211"
        with session_scope(engine) as session:
            assert error_stats(session, cid) == {
                "errors": [
                    {"code": "30007", "text": "Message filtered by carrier", "count": 3, "share": 0.6},
                    {"code": "21211", "text": "Invalid 'To' phone number", "count": 1, "share": 0.2},
                    {"code": "unknown", "text": None, "count": 1, "share": 0.2},
                ]
            }
    finally:
        engine.dispose()


def test_a_pending_callback_left_behind_is_applied_by_the_sweep(database_url: str, tmp_path) -> None:
    """A callback stored before its provider id was recorded, whose re-check never ran (the
    process died): the sweep at the end of sending applies it."""
    from sqlalchemy import select

    from core.campaigns.definition import create_campaign
    from core.campaigns.schemas import CampaignCreate
    from core.contacts.importing import upsert_contacts
    from core.db import make_engine, session_scope
    from core.delivery.status import ingest_status_updates, sweep_campaign
    from core.hooks.contracts import StatusUpdate
    from core.models import Message

    engine = make_engine(database_url)
    try:
        upsert_contacts(engine, [{"phone": "+12025550100"}])
        cid = create_campaign(
            engine,
            CampaignCreate.model_validate({"name": "S", "variants": [{"name": "A", "body": "Hi"}]}),
            providers={"fake"},
        )["id"]
        with session_scope(engine) as session:
            session.add(
                Message(
                    campaign_id=cid,
                    contact_id=1,
                    phone="+12025550100",
                    body="Hi",
                    provider="fake",
                    idempotency_key="k1",
                    status="sending",
                )
            )
        ingest_status_updates(engine, "fake", [StatusUpdate("fake-late", "delivered")], {"body": "raw"})
        with session_scope(engine) as session:  # the id is recorded, but nobody re-checks
            message = session.scalars(select(Message)).one()
            message.status, message.provider_message_id = "sent", "fake-late"
        assert sweep_campaign(engine, cid) == 1
        with session_scope(engine) as session:
            assert session.scalars(select(Message.status)).one() == "delivered"
        assert sweep_campaign(engine, cid) == 0
    finally:
        engine.dispose()


def test_the_status_writer_stores_what_is_pending_before_it_closes(database_url: str, tmp_path: Any) -> None:
    """The app's lifespan closes the writer: callbacks still queued then are written and answered
    first, and a writer started again (a second lifespan) writes as before."""
    import asyncio
    import json

    from core.delivery.status_writer import StatusWriter
    from core.hooks.contracts import WebhookRequest
    from core.hooks.registry import load_plugins
    from core.settings import Settings

    engine = make_engine(database_url)
    cid, ids = _campaign(engine, 40, with_ids=40, prefix="close")
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={})
    provider = registry.provider("fake")
    changes: list[tuple[int, str, str]] = []

    def callback(i: int) -> WebhookRequest:
        body = json.dumps({"message_id": f"close-{i}", "status": "delivered"}).encode()
        return WebhookRequest(
            url="http://x/webhooks/fake/status", headers={}, body=body, content_type="application/json"
        )

    async def run() -> list[int]:
        writer = StatusWriter(engine, changes.extend, max_batch=8)
        writer.start()
        first = [asyncio.ensure_future(writer.submit(provider, callback(i))) for i in range(20)]
        await asyncio.sleep(0)  # all queued, the first batch on its way
        await writer.close()
        assert all(f.done() for f in first)  # answered before close returned
        writer.start()
        second = await asyncio.gather(*(writer.submit(provider, callback(i)) for i in range(20, 40)))
        await writer.close()
        return [o.changed for o in [f.result() for f in first] + second]

    assert asyncio.run(run()) == [1] * 40
    registry.close()
    assert sorted(mid for mid, _, _ in changes) == ids
    with session_scope(engine, read_only=True) as session:
        statuses = Counter(session.scalars(select(Message.status).where(Message.campaign_id == cid)))
    assert statuses == {"delivered": 40}


def test_callers_answered_together_are_written_together(database_url: str, tmp_path: Any, monkeypatch: Any) -> None:
    """Callers that send their next callback as soon as the last one is answered (a provider's
    connections, wrk's) arrive spread out at first; the writer waits briefly after a batch while
    they keep coming, so they end up in one batch a round instead of alternating halves (which
    paid the transaction's fixed cost twice a round)."""
    import asyncio
    import json

    import core.delivery.status_writer as writer_module
    from core.delivery.status_writer import StatusWriter
    from core.hooks.contracts import WebhookRequest
    from core.hooks.registry import load_plugins
    from core.settings import Settings

    callers, rounds = 16, 25
    engine = make_engine(database_url)
    _campaign(engine, callers * rounds, with_ids=callers * rounds, prefix="gather")
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={})
    provider = registry.provider("fake")
    sizes: list[int] = []
    original = writer_module.ingest_callbacks

    def ingest(engine_: Engine, callbacks: list[Any], **kwargs: Any) -> Any:
        sizes.append(len(callbacks))
        return original(engine_, callbacks, **kwargs)

    monkeypatch.setattr(writer_module, "ingest_callbacks", ingest)

    def callback(i: int) -> WebhookRequest:
        body = json.dumps({"message_id": f"gather-{i}", "status": "delivered"}).encode()
        return WebhookRequest(
            url="http://x/webhooks/fake/status", headers={}, body=body, content_type="application/json"
        )

    async def caller(writer: StatusWriter, index: int) -> int:
        await asyncio.sleep(index * 0.0007)  # spread out, as connections opened one after the other
        changed = 0
        for turn in range(rounds):
            changed += (await writer.submit(provider, callback(turn * callers + index))).changed
            await asyncio.sleep(0.0003)  # the next request, a moment after the answer
        return changed

    async def run() -> list[int]:
        writer = StatusWriter(engine)
        try:
            return await asyncio.gather(*(caller(writer, i) for i in range(callers)))
        finally:
            await writer.close()

    assert asyncio.run(run()) == [rounds] * callers
    registry.close()
    assert sum(sizes) == callers * rounds
    assert sizes.count(callers) >= rounds - 6, sizes
