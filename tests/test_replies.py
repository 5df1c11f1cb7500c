"""Replies and opt-outs: attribution to the latest campaign message within 7 days, the STOP /
START / HELP keywords and their synonyms, the replies route and the stats, and a STOP that lands
while its campaign is still sending."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from core.db import make_engine, session_scope
from core.delivery.replies import DEFAULT_HELP_TEXT, ReplyTexts, handle_inbound, keyword_of
from core.hooks.contracts import InboundMessage
from core.models import Campaign, Contact, Message, Reply
from tests.live import LiveService, wait_for
from tests.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioStandIn, inbound_params, signed_post

PHONES = [f"+1202555{n:04d}" for n in range(500, 540)]
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_keywords_are_whole_messages_in_any_case() -> None:
    assert [
        keyword_of(text)
        for text in [
            "STOP",
            " stop ",
            "Stop!",
            "stopall",
            "Unsubscribe.",
            "cancel",
            "END",
            "quit",
            "START",
            "unstop",
            "Yes",
            "HELP",
            "info",
        ]
    ] == [
        "STOP",
        "STOP",
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "START",
        "UNSTOP",
        "YES",
        "HELP",
        "INFO",
    ]
    assert [keyword_of(text) for text in ["Stop sending me this", "yes please", "", "S T O P", "help me"]] == [None] * 5


def test_answers_come_from_plugins_toml_and_the_environment_wins() -> None:
    assert ReplyTexts.from_config({}, {}) == ReplyTexts(help=DEFAULT_HELP_TEXT, stop=None, start=None)
    file_config = {"replies": {"help_text": "Acme: reply STOP to quit", "stop_text": "Bye", "start_text": ""}}
    assert ReplyTexts.from_config(file_config, {}) == ReplyTexts("Acme: reply STOP to quit", "Bye", None)
    environ = {"TEXTPULSE_HELP_TEXT": "From env", "TEXTPULSE_STOP_TEXT": "", "TEXTPULSE_START_TEXT": "Welcome back"}
    assert ReplyTexts.from_config(file_config, environ) == ReplyTexts("From env", None, "Welcome back")


def test_a_reply_belongs_to_the_latest_campaign_message_sent_within_7_days(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            old, new = Campaign(name="old", status="completed"), Campaign(name="new", status="completed")
            contacts = [Contact(phone=p, attributes={}) for p in PHONES[:4]]
            session.add_all([old, new, *contacts])
            session.flush()

            def message(campaign: Campaign, contact: Contact, sent: datetime | None, phase: str = "all") -> Message:
                m = Message(
                    campaign_id=campaign.id or 0,
                    contact_id=contact.id or 0,
                    phone=contact.phone,
                    body="Hi",
                    provider="fake",
                    phase=phase,
                    status="delivered" if sent else "queued",
                    sent_at=sent,
                    idempotency_key=f"{campaign.name}-{contact.phone}-{phase}",
                )
                session.add(m)
                return m

            a_old = message(old, contacts[0], NOW - timedelta(days=3))
            a_new = message(new, contacts[0], NOW - timedelta(days=1))
            message(old, contacts[1], NOW - timedelta(days=8))
            c_campaign = message(old, contacts[2], NOW - timedelta(days=2))
            message(new, contacts[2], NOW - timedelta(hours=1), phase="test_send")  # test sends never count
            message(new, contacts[2], None)  # queued, not sent: nothing to reply to yet
            message(new, contacts[3], NOW + timedelta(minutes=5))  # sent after the reply
            session.flush()
            expected = {
                PHONES[0]: (new.id, a_new.id),
                PHONES[1]: (None, None),
                PHONES[2]: (old.id, c_campaign.id),
                PHONES[3]: (None, None),
            }
            assert a_old.id != a_new.id
        texts = ReplyTexts()
        for phone, (campaign_id, message_id) in expected.items():
            outcome = handle_inbound(engine, "fake", InboundMessage(phone, FROM_NUMBER, "Sounds good"), texts, now=NOW)
            assert (outcome.reply.campaign_id, outcome.reply.message_id) == (campaign_id, message_id), phone
            assert (outcome.keyword, outcome.action, outcome.answer) == (None, None, None)
        stranger = handle_inbound(
            engine, "fake", InboundMessage("+12025559999", FROM_NUMBER, "who is this?"), texts, now=NOW
        )
        assert (stranger.reply.contact_id, stranger.reply.campaign_id, stranger.reply.phone) == (
            None,
            None,
            "+12025559999",
        )
        # A STOP from a number we never imported is kept as an opted-out contact.
        stop = handle_inbound(engine, "fake", InboundMessage("+12025559998", FROM_NUMBER, "STOP"), texts, now=NOW)
        assert (stop.keyword, stop.action, stop.answer) == ("STOP", "opted_out", None)
        with session_scope(engine) as session:
            kept = session.scalars(select(Contact).where(Contact.phone == "+12025559998")).one()
            assert kept.opted_out_at == NOW and stop.reply.contact_id == kept.id
    finally:
        engine.dispose()


def _inbound(live: LiveService, phone: str, body: str) -> dict[str, object]:
    response = live.post("/webhooks/fake/inbound", {"from": phone, "to": FROM_NUMBER, "body": body})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_replies_keywords_stats_and_the_replies_route(database_url: str, temporal_address: str, tmp_path: Path) -> None:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        plugin_config={
            "plugins": {"fake": {"delivery_ratio": 1.0, "callback_delay_seconds": [0.01, 0.05]}},
            "replies": {"help_text": "Acme: reply STOP to quit."},
        },
    )
    live.start()
    try:
        live.post("/api/contacts", [{"phone": p, "name": f"P{i}"} for i, p in enumerate(PHONES[:4])])
        cid = live.post("/api/campaigns", {"name": "R", "variants": [{"name": "A", "body": "Sale!"}]}).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        wait_for(lambda: live.stats(cid)["delivered"] == 4, what="four deliveries")

        assert _inbound(live, PHONES[0], "Yes please, tell me more") == {"reply": None}
        assert _inbound(live, PHONES[1], "  stop! ") == {"reply": None}
        assert _inbound(live, PHONES[2], "UNSUBSCRIBE") == {"reply": None}
        assert _inbound(live, PHONES[2], "unstop") == {"reply": None}
        assert _inbound(live, PHONES[3], "help") == {"reply": "Acme: reply STOP to quit."}
        assert _inbound(live, PHONES[0], "Thanks") == {"reply": None}

        opted = {
            c["phone"]: c["opted_out_at"] is not None
            for c in live.get("/api/contacts", params={"limit": 10}).json()["items"]
        }
        assert opted == {PHONES[0]: False, PHONES[1]: True, PHONES[2]: False, PHONES[3]: False}
        stats = live.stats(cid)
        assert (stats["replies"], stats["reply_rate"], stats["opt_outs"]) == (2, 0.25, 2)

        rows = live.get(f"/api/campaigns/{cid}/replies")
        assert rows.status_code == 200, rows.text
        items = rows.json()["items"]
        assert [(r["phone"], r["body"], r["keyword"], r["opted_out"], r["variant"]) for r in items] == [
            (PHONES[0], "Yes please, tell me more", None, False, "A"),
            (PHONES[1], "  stop! ", "STOP", True, "A"),
            (PHONES[2], "UNSUBSCRIBE", "UNSUBSCRIBE", False, "A"),
            (PHONES[2], "unstop", "UNSTOP", False, "A"),
            (PHONES[3], "help", "HELP", False, "A"),
            (PHONES[0], "Thanks", None, False, "A"),
        ]
        first = items[0]
        assert first["campaign_id"] == cid and first["name"] == "P0" and first["provider"] == "fake"
        message = live.messages(cid, phone=PHONES[0])[0]
        assert (first["message_id"], first["contact_id"]) == (message["id"], message["contact_id"])
        assert rows.json()["next"] is None
        only_replies = live.get(f"/api/campaigns/{cid}/replies", params={"keywords": "exclude"}).json()["items"]
        assert [r["body"] for r in only_replies] == ["Yes please, tell me more", "Thanks"]
        paged = live.get(f"/api/campaigns/{cid}/replies", params={"keywords": "only", "limit": 3}).json()
        assert [r["keyword"] for r in paged["items"]] == ["STOP", "UNSUBSCRIBE", "UNSTOP"]
        rest = live.get(f"/api/campaigns/{cid}/replies", params={"keywords": "only", "cursor": paged["next"]}).json()
        assert [r["keyword"] for r in rest["items"]] == ["HELP"]
        assert live.get("/api/campaigns/999999/replies").status_code == 404

        # The next campaign leaves the opted-out contact out.
        second = live.post("/api/campaigns", {"name": "R2", "variants": [{"name": "A", "body": "Again"}]}).json()["id"]
        assert live.post(f"/api/campaigns/{second}/launch").status_code == 202
        wait_for(lambda: live.stats(second)["delivered"] == 3, what="three deliveries")
        assert sorted(m["phone"] for m in live.messages(second)) == [PHONES[0], PHONES[2], PHONES[3]]
    finally:
        live.stop()


def test_a_stop_during_a_running_campaign_means_no_later_message(
    database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    with TwilioStandIn() as twilio:
        live = LiveService(
            database_url=database_url,
            temporal_address=temporal_address,
            data_dir=tmp_path,
            env={"TEXTPULSE_BATCH_SIZE": "5", "TEXTPULSE_MAX_CONCURRENT_BATCHES": "4"},
            plugin_config={
                "plugins": {
                    "twilio": {
                        "account_sid": ACCOUNT_SID,
                        "auth_token": AUTH_TOKEN,
                        "from_number": FROM_NUMBER,
                        "api_base": twilio.url,
                    }
                }
            },
        )
        live.start()
        try:
            live.post("/api/contacts", [{"phone": p} for p in PHONES])
            cid = live.post(
                "/api/campaigns", {"name": "S", "provider": "twilio", "variants": [{"name": "A", "body": "Hello"}]}
            ).json()["id"]
            twilio.gate.clear()  # the first wave of batches is held at Twilio's door
            assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
            wait_for(lambda: twilio.waiting >= 1, what="the first sends held")
            last = PHONES[-1]  # its message is in the 8th batch of 5
            stop = signed_post(f"{live.url}/webhooks/twilio/inbound", inbound_params(last, "STOP"))
            assert stop.status_code == 200, stop.text
            twilio.gate.set()
            stats = wait_for(
                lambda: (s := live.stats(cid))["delivered"] == len(PHONES) - 1 and s,
                what="every other message delivered",
                timeout=60,
            )
            assert stats["sent"] == len(PHONES) - 1
            assert twilio.sent_to(last) == [] and last not in [r["form"]["To"] for r in twilio.requests]
            message = live.messages(cid, phone=last)[0]
            assert (message["status"], message["error_text"], message["provider_message_id"]) == (
                "cancelled",
                "contact opted out",
                None,
            )
            assert wait_for(
                lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="the campaign completed"
            )
            with session_scope(live.engine) as session:
                contact = session.scalars(select(Contact).where(Contact.phone == last)).one()
                assert contact.opted_out_at is not None
                reply = session.scalars(select(Reply)).one()
                # Nothing had been sent to that contact yet, so the STOP belongs to no campaign.
                assert (reply.keyword, reply.contact_id, reply.campaign_id) == ("STOP", contact.id, None)
        finally:
            live.stop()
