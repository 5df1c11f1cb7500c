"""The Twilio provider against a local stand-in of Twilio's API (tests/twilio_api.py), with
signatures made and checked by the official `twilio` package's RequestValidator."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import col
from twilio.request_validator import RequestValidator

from core.db import session_scope
from core.models import Contact, Reply, StatusEvent
from plugins.twilio import EMPTY_TWIML, TwilioProvider, twilio_signature
from tests.live import LiveService, wait_for
from tests.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioStandIn, inbound_params, signed_post
from textpulse import OutgoingMessage, StatusUpdate, WebhookError, WebhookRequest

PHONES = [f"+1202555{n:04d}" for n in range(300, 310)]
INVALID, UNSUBSCRIBED, THROTTLED, UNDELIVERED = PHONES[6], PHONES[7], PHONES[8], PHONES[9]
CALLBACK = "https://sms.example.com/webhooks/twilio/status"


def _provider(api_base: str, **extra: Any) -> TwilioProvider:
    return TwilioProvider(
        {
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "from_number": FROM_NUMBER,
            "api_base": api_base,
            **extra,
        }
    )


def _out(message_id: int, to: str, body: str = "Hello") -> OutgoingMessage:
    return OutgoingMessage(message_id, to, body, f"key-{message_id}", CALLBACK)


def _signed(
    url: str,
    params: dict[str, str],
    *,
    token: str = AUTH_TOKEN,
    content_type: str = "application/x-www-form-urlencoded",
) -> WebhookRequest:
    body = httpx.QueryParams(params).__str__().encode()
    signature = RequestValidator(token).compute_signature(url, params)
    return WebhookRequest(
        url=url, headers={"x-twilio-signature": signature}, body=body, content_type=content_type, form=dict(params)
    )


@pytest.fixture
def standin() -> Iterator[TwilioStandIn]:
    with TwilioStandIn(
        invalid=[INVALID], unsubscribed=[UNSUBSCRIBED], throttle_once=[THROTTLED], undelivered=[UNDELIVERED]
    ) as api:
        yield api


# -- signatures -----------------------------------------------------------------------------------
def test_our_signature_is_the_one_twilios_request_validator_computes_and_accepts() -> None:
    validator = RequestValidator(AUTH_TOKEN)
    cases = [
        ("https://sms.example.com/webhooks/twilio/status", {"MessageSid": "SM1", "MessageStatus": "delivered"}),
        ("https://sms.example.com:8443/webhooks/twilio/inbound?x=1&y=ä", {"Body": "Grüße 👋 & <STOP>", "From": "+1"}),
        ("http://127.0.0.1:8000/webhooks/twilio/status", {}),
        ("https://sms.example.com/webhooks/twilio/status", {"ErrorCode": "", "To": "+12025550100"}),
    ]
    for url, params in cases:
        ours = twilio_signature(AUTH_TOKEN, url, params)
        assert ours == validator.compute_signature(url, params)
        assert validator.validate(url, params, ours)
    assert not validator.validate(
        cases[0][0], {"MessageSid": "SM2", "MessageStatus": "delivered"}, twilio_signature(AUTH_TOKEN, *cases[0])
    )


def test_status_callbacks_are_verified_then_mapped() -> None:
    provider = _provider("http://unused.invalid")
    base = {"AccountSid": ACCOUNT_SID, "MessageSid": "SMabc", "SmsSid": "SMabc", "To": PHONES[0], "From": FROM_NUMBER}
    expected = {
        "queued": "queued",
        "accepted": "queued",
        "sending": "sending",
        "sent": "sent",
        "delivered": "delivered",
        "undelivered": "undelivered",
        "failed": "failed",
        "read": "delivered",
    }
    for twilio_status, ours in expected.items():
        updates = provider.parse_status(_signed(CALLBACK, {**base, "MessageStatus": twilio_status}))
        assert updates == [StatusUpdate("SMabc", ours, None, None)]
    failed = provider.parse_status(_signed(CALLBACK, {**base, "MessageStatus": "undelivered", "ErrorCode": "30003"}))
    assert failed == [StatusUpdate("SMabc", "undelivered", "30003", "Unreachable destination handset")]
    # Twilio signs a URL with the default port added or left out: both verify.
    assert (
        provider.parse_status(
            _signed("https://sms.example.com:443/webhooks/twilio/status", {**base, "MessageStatus": "sent"})
        )[0].status
        == "sent"
    )

    def refused(request: WebhookRequest) -> tuple[int, str]:
        with pytest.raises(WebhookError) as info:
            provider.parse_status(request)
        return info.value.status_code, info.value.detail

    good = _signed(CALLBACK, {**base, "MessageStatus": "sent"})
    assert refused(WebhookRequest(CALLBACK, {}, good.body, good.content_type)) == (
        403,
        "the X-Twilio-Signature header is missing",
    )
    tampered = WebhookRequest(CALLBACK, good.headers, good.body.replace(b"sent", b"delivered"), good.content_type)
    assert refused(tampered)[0] == 403 and "X-Twilio-Signature does not match" in refused(tampered)[1]
    elsewhere = WebhookRequest(
        "https://other.example.com/webhooks/twilio/status", good.headers, good.body, good.content_type
    )
    assert refused(elsewhere)[0] == 403
    assert refused(_signed(CALLBACK, {**base, "MessageStatus": "sent"}, token="0" * 32))[0] == 403
    assert refused(_signed(CALLBACK, {"MessageStatus": "sent"})) == (400, "field 'MessageSid' is required")
    assert refused(_signed(CALLBACK, {"MessageSid": "SM1"})) == (400, "field 'MessageStatus' is required")
    code, detail = refused(_signed(CALLBACK, {**base, "MessageStatus": "exploded"}))
    assert code == 400 and "field 'MessageStatus' must be one of" in detail and "'exploded'" in detail
    assert refused(_signed(CALLBACK, {**base, "MessageStatus": "failed", "ErrorCode": "abc"})) == (
        400,
        "field 'ErrorCode' must be a number, got 'abc'",
    )
    # A JSON body: its signature covers the URL only, so a valid one gets as far as the type check.
    json_request = WebhookRequest(
        CALLBACK,
        {"x-twilio-signature": twilio_signature(AUTH_TOKEN, CALLBACK, {})},
        b'{"MessageSid": "SM1"}',
        "application/json",
    )
    assert refused(json_request) == (415, "expected application/x-www-form-urlencoded, got application/json")
    unconfigured = TwilioProvider({})
    with pytest.raises(WebhookError) as info:
        unconfigured.parse_status(good)
    assert info.value.status_code == 403 and "no auth_token is configured" in info.value.detail


def test_inbound_is_verified_and_answered_with_twiml() -> None:
    provider = _provider("http://unused.invalid")
    url = "https://sms.example.com/webhooks/twilio/inbound"
    inbound = provider.parse_inbound(_signed(url, inbound_params(PHONES[0], "Hi there")))
    assert (inbound.from_phone, inbound.to, inbound.body) == (PHONES[0], FROM_NUMBER, "Hi there")
    assert inbound.provider_message_id and inbound.provider_message_id.startswith("SM")
    assert provider.inbound_response(inbound, None).body == EMPTY_TWIML
    answer = provider.inbound_response(inbound, "Reply STOP to stop & <more>")
    assert answer.content_type == "text/xml"
    assert answer.body == (
        b'<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
        b"Reply STOP to stop &amp; &lt;more&gt;</Message></Response>"
    )


# -- sending ----------------------------------------------------------------------------------------
def test_send_batch_maps_twilios_answers(standin: TwilioStandIn) -> None:
    provider = _provider(standin.url)
    try:
        results = provider.send_batch(
            [_out(1, PHONES[0], "Hi 1"), _out(2, INVALID), _out(3, UNSUBSCRIBED), _out(4, THROTTLED, "Hi 4")]
        )
    finally:
        provider.close()
    ok, invalid, unsubscribed, throttled = results
    assert ok.accepted and ok.provider_message_id == standin.sent_to(PHONES[0])[0]["sid"]
    assert (ok.provider_message_id or "").startswith("SM") and not ok.transient
    assert (invalid.accepted, invalid.error_code, invalid.error_text, invalid.transient) == (
        False,
        "21211",
        f"The 'To' number {INVALID} is not a valid phone number.",
        False,
    )
    assert (unsubscribed.error_code, unsubscribed.error_text, unsubscribed.transient) == (
        "21610",
        "Attempt to send to unsubscribed recipient",
        False,
    )
    # 429 with Retry-After: 1 was waited out in place, then accepted.
    assert throttled.accepted and throttled.provider_message_id == standin.sent_to(THROTTLED)[0]["sid"]
    assert [r["form"]["To"] for r in standin.requests].count(THROTTLED) == 2
    first = standin.requests[0]
    assert first["form"] == {"To": PHONES[0], "Body": "Hi 1", "StatusCallback": CALLBACK, "From": FROM_NUMBER}
    assert first["content_type"] == "application/x-www-form-urlencoded"
    assert provider.unsubscribed_error_codes == {"21610"}
    # An invalid number stays invalid: retry-failed does not send it again.
    assert invalid.error_code in provider.permanent_error_codes and "21610" in provider.permanent_error_codes
    assert provider.check_config() == []


def test_a_down_twilio_is_transient_and_the_rest_of_the_batch_waits(standin: TwilioStandIn) -> None:
    standin.failing.add(PHONES[1])
    provider = _provider(standin.url)
    try:
        results = provider.send_batch([_out(1, PHONES[0]), _out(2, PHONES[1]), _out(3, PHONES[2])])
    finally:
        provider.close()
    assert results[0].accepted
    assert [(r.accepted, r.transient, r.error_code) for r in results[1:]] == [(False, True, "20500")] * 2
    assert [r["form"]["To"] for r in standin.requests] == [PHONES[0], PHONES[1]]  # the third was not tried


def test_messaging_service_sid_replaces_from(standin: TwilioStandIn) -> None:
    provider = TwilioProvider(
        {
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "api_base": standin.url,
            "messaging_service_sid": "MG" + "1" * 32,
        }
    )
    try:
        assert provider.send_batch([_out(1, PHONES[0])])[0].accepted
    finally:
        provider.close()
    assert standin.requests[0]["form"]["MessagingServiceSid"] == "MG" + "1" * 32
    assert "From" not in standin.requests[0]["form"]


def test_an_unconfigured_twilio_refuses_sends_with_a_clear_error(standin: TwilioStandIn) -> None:
    provider = TwilioProvider({"account_sid": ACCOUNT_SID, "api_base": standin.url})
    results = provider.send_batch([_out(1, PHONES[0]), _out(2, PHONES[1])])
    assert [(r.accepted, r.transient, r.error_code) for r in results] == [(False, False, "not_configured")] * 2
    assert results[0].error_text == (
        "twilio is not configured: set auth_token, from_number or messaging_service_sid "
        "in [plugins.twilio] of plugins.toml or as TEXTPULSE_TWILIO_<SETTING>"
    )
    assert standin.requests == [] and provider.find_sent([_out(1, PHONES[0])]) == {}


def test_an_answer_lost_in_transit_is_looked_up_not_sent_again(standin: TwilioStandIn) -> None:
    standin.slow.add(PHONES[3])
    standin.slow_seconds = 1.5
    provider = _provider(standin.url, timeout=0.5)
    try:
        result = provider.send_batch([_out(7, PHONES[3], "Only once")])[0]
    finally:
        provider.close()
    assert result.accepted and result.provider_message_id == standin.sent_to(PHONES[3])[0]["sid"]
    assert len(standin.sent_to(PHONES[3])) == 1


def test_find_sent_matches_to_and_body_of_messages_created_since_the_attempt(standin: TwilioStandIn) -> None:
    provider = _provider(standin.url)
    try:
        before = datetime.now(UTC) - timedelta(minutes=5)
        sid = provider.send_batch([_out(1, PHONES[0], "Body one")])[0].provider_message_id
        provider.send_batch([_out(2, PHONES[1], "Body two")])
        # Listed by To, not by DateSent: a message still queued at Twilio (no date_sent) is found.
        assert all(m["date_sent"] is None for m in standin.messages)
        found = provider.find_sent(
            [_out(1, PHONES[0], "Body one"), _out(5, PHONES[0], "Never sent"), _out(6, PHONES[2], "Body two")]
        )
        assert found == {1: sid}
        again = OutgoingMessage(9, PHONES[0], "Body one", "key-9", CALLBACK, attempted_at=before)
        assert provider.find_sent([again]) == {9: sid}
        # An attempt made after that message was created (a retry of it, same phone and body)
        # is not that message: not found, so it is sent.
        later = OutgoingMessage(
            9, PHONES[0], "Body one", "key-9", CALLBACK, attempted_at=datetime.now(UTC) + timedelta(minutes=5)
        )
        assert provider.find_sent([later]) == {}
    finally:
        provider.close()


# -- the whole way through the service ----------------------------------------------------------------
def _twilio_live(database_url: str, temporal_address: str, data_dir: Path, api_base: str, **extra: Any) -> LiveService:
    return LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=data_dir,
        plugin_config={
            "plugins": {
                "twilio": {
                    "account_sid": ACCOUNT_SID,
                    "auth_token": AUTH_TOKEN,
                    "from_number": FROM_NUMBER,
                    "api_base": api_base,
                },
                "fake": {"delivery_ratio": 1.0},
            },
            **extra,
        },
    )


def test_a_campaign_goes_out_through_twilio_and_comes_back_in_signed_callbacks(
    database_url: str, temporal_address: str, tmp_path: Path, standin: TwilioStandIn
) -> None:
    live = _twilio_live(database_url, temporal_address, tmp_path, standin.url)
    live.start()
    try:
        assert live.post("/api/contacts", [{"phone": p, "name": f"P{i}"} for i, p in enumerate(PHONES)]).json()[
            "created"
        ] == len(PHONES)
        body = {"name": "Twilio", "provider": "twilio", "variants": [{"name": "A", "body": "Hi {{ name }}, sale"}]}
        cid = live.post("/api/campaigns", body).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        stats = wait_for(
            lambda: (s := live.stats(cid))["delivered"] + s["undelivered"] + s["failed"] == len(PHONES) and s,
            what="a final status for every message",
            timeout=60,
        )
        assert (stats["sent"], stats["delivered"], stats["undelivered"], stats["failed"]) == (8, 7, 1, 2)
        assert stats["delivery_rate"] == round(7 / 8, 6)

        # Each number got exactly one message; refused numbers none.
        assert Counter(m["to"] for m in standin.messages) == Counter(
            p for p in PHONES if p not in (INVALID, UNSUBSCRIBED)
        )
        for request in standin.requests:
            assert request["form"]["StatusCallback"] == f"{live.url}/webhooks/twilio/status"
            assert request["form"]["From"] == FROM_NUMBER
        wait_for(lambda: len(standin.callback_answers) == 16, what="every callback answered")
        assert set(standin.callback_answers) == {200}

        by_phone = {m["phone"]: m for m in live.messages(cid)}
        assert by_phone[PHONES[0]]["status"] == "delivered"
        assert by_phone[PHONES[0]]["provider_message_id"] == standin.sent_to(PHONES[0])[0]["sid"]
        assert (by_phone[INVALID]["status"], by_phone[INVALID]["error_code"]) == ("failed", "21211")
        assert (by_phone[UNSUBSCRIBED]["status"], by_phone[UNSUBSCRIBED]["error_code"]) == ("failed", "21610")
        assert (
            by_phone[UNDELIVERED]["status"],
            by_phone[UNDELIVERED]["error_code"],
            by_phone[UNDELIVERED]["error_text"],
        ) == ("undelivered", "30003", "Unreachable destination handset")
        assert by_phone[THROTTLED]["status"] == "delivered"

        # 21610 means the recipient unsubscribed at Twilio: the contact is opted out here too.
        with session_scope(live.engine) as session:
            opted = {c.phone: c.opted_out_at is not None for c in session.scalars(select(Contact))}
            assert session.scalar(select(func.count()).select_from(StatusEvent)) == 16
        assert [p for p, out in opted.items() if out] == [UNSUBSCRIBED]

        errors = live.get(f"/api/campaigns/{cid}/stats/errors")
        assert errors.status_code == 200, errors.text
        assert errors.json() == {
            "errors": [
                {
                    "code": "21211",
                    "text": f"The 'To' number {INVALID} is not a valid phone number.",
                    "count": 1,
                    "share": 0.333333,
                },
                {"code": "21610", "text": "Attempt to send to unsubscribed recipient", "count": 1, "share": 0.333333},
                {"code": "30003", "text": "Unreachable destination handset", "count": 1, "share": 0.333333},
            ]
        }
    finally:
        live.stop()


def test_twilio_webhooks_refuse_bad_signatures_and_store_nothing(
    database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    live = _twilio_live(database_url, temporal_address, tmp_path, "http://127.0.0.1:9")
    live.start()
    try:
        status_url = f"{live.url}/webhooks/twilio/status"
        params = {"MessageSid": "SM1", "MessageStatus": "delivered", "AccountSid": ACCOUNT_SID}
        missing = httpx.post(status_url, data=params)
        assert (missing.status_code, missing.json()["detail"]) == (403, "the X-Twilio-Signature header is missing")
        wrong = httpx.post(status_url, data=params, headers={"x-twilio-signature": "bm9wZQ=="})
        assert wrong.status_code == 403 and "does not match" in wrong.json()["detail"]
        other_token = signed_post(status_url, params, auth_token="0" * 32)
        assert other_token.status_code == 403
        for_inbound = RequestValidator(AUTH_TOKEN).compute_signature(f"{live.url}/webhooks/twilio/inbound", params)
        assert httpx.post(status_url, data=params, headers={"x-twilio-signature": for_inbound}).status_code == 403
        inbound = httpx.post(
            f"{live.url}/webhooks/twilio/inbound",
            data=inbound_params(PHONES[0], "STOP"),
            headers={"x-twilio-signature": "bm9wZQ=="},
        )
        assert inbound.status_code == 403
        with session_scope(live.engine) as session:
            assert session.scalar(select(func.count()).select_from(StatusEvent)) == 0
            assert session.scalar(select(func.count()).select_from(Reply)) == 0
            assert session.scalar(select(func.count()).select_from(Contact)) == 0

        # A correctly signed callback for an id we never sent: stored, flagged, answered 200.
        good = signed_post(status_url, params)
        assert good.status_code == 200, good.text
        assert (good.headers["x-textpulse-stored"], good.headers["x-textpulse-unmatched"]) == ("1", "SM1")

        # Inbound: STOP opts out with empty TwiML, HELP answers, START opts in again.
        live.post("/api/contacts", [{"phone": PHONES[0]}])
        inbound_url = f"{live.url}/webhooks/twilio/inbound"
        stop = signed_post(inbound_url, inbound_params(PHONES[0], "Stop"))
        assert (stop.status_code, stop.content, stop.headers["content-type"]) == (200, EMPTY_TWIML, "text/xml")
        contact = live.get("/api/contacts", params={"phone": PHONES[0]}).json()["items"][0]
        assert contact["opted_out_at"] is not None
        help_answer = signed_post(inbound_url, inbound_params(PHONES[0], "HELP"))
        assert help_answer.content == (
            b'<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
            b"Reply STOP to unsubscribe or START to subscribe again.</Message></Response>"
        )
        assert signed_post(inbound_url, inbound_params(PHONES[0], "start")).content == EMPTY_TWIML
        contact = live.get("/api/contacts", params={"phone": PHONES[0]}).json()["items"][0]
        assert contact["opted_out_at"] is None
        with session_scope(live.engine) as session:
            replies = session.scalars(select(Reply).order_by(col(Reply.id)))
            assert [(r.body, r.keyword, r.provider) for r in replies] == [
                ("Stop", "STOP", "twilio"),
                ("HELP", "HELP", "twilio"),
                ("start", "START", "twilio"),
            ]
    finally:
        live.stop()


def test_an_unconfigured_twilio_refuses_its_webhooks(live: LiveService) -> None:
    url = f"{live.url}/webhooks/twilio/status"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    response = signed_post(url, params)
    assert response.status_code == 403
    assert response.json() == {
        "status_code": 403,
        "extra": None,
        "detail": (
            "twilio webhooks are refused: no auth_token is configured "
            "([plugins.twilio] auth_token or TEXTPULSE_TWILIO_AUTH_TOKEN)"
        ),
    }
    with session_scope(live.engine) as session:
        assert session.scalar(select(func.count()).select_from(StatusEvent)) == 0
