"""Launch checks and the test-send rules (API.md "Launch checks and test sends"), over HTTP
against the running service (API + worker on the Temporal dev server), on SQLite and PostgreSQL.

A refused launch is a 422 naming every problem, and nothing starts: the campaign stays a draft,
it has no message and its workflow does not exist. A test send creates and changes no contact.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlmodel import col
from temporalio.service import RPCError, RPCStatusCode

from core.db import session_scope
from core.models import Campaign, Click, Contact, Message
from tests.live import LiveService, wait_for

PHONES = [f"+1202555{n:04d}" for n in range(700, 706)]
STRANGER = "+12025550799"  # a phone that is no contact


def _contacts(live: LiveService, rows: list[dict[str, Any]]) -> None:
    response = live.post("/api/contacts", rows)
    assert response.status_code == 200, response.text
    assert response.json()["invalid"] == []


def _create(live: LiveService, body: str = "Hi {{ name | default('there') }}", **extra: Any) -> int:
    created = live.post("/api/campaigns", {"name": "Checks", "variants": [{"name": "A", "body": body}], **extra})
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def _opt_out(live: LiveService, phone: str) -> None:
    reply = live.post("/webhooks/fake/inbound", {"from": phone, "to": "+15550000000", "body": "STOP"})
    assert reply.status_code < 300, reply.text
    wait_for(
        lambda: live.get("/api/contacts", params={"phone": phone}).json()["items"][0]["opted_out_at"],
        what=f"{phone} opted out",
    )


def _count(live: LiveService, model: type) -> int:
    with session_scope(live.engine, read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _workflow_exists(live: LiveService, campaign_id: int) -> bool:
    assert live.service is not None and live.service.client is not None
    handle = live.service.client.get_workflow_handle(live.settings.workflow_id(campaign_id))
    try:
        live._run(handle.describe())
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND, exc
        return False
    return True


def _refused(live: LiveService, campaign_id: int, *needles: str) -> dict[str, Any]:
    """POST /launch is a 422 whose detail holds every needle, and nothing started."""
    response = live.post(f"/api/campaigns/{campaign_id}/launch")
    assert response.status_code == 422, response.text
    body = dict(response.json())
    assert body["status_code"] == 422
    for needle in needles:
        assert needle in body["detail"], (needle, body["detail"])
    campaign = live.get(f"/api/campaigns/{campaign_id}").json()
    assert campaign["status"] == "draft" and campaign["launched_at"] is None
    assert live.messages(campaign_id) == []
    assert not _workflow_exists(live, campaign_id)
    assert live.fake.ledger() == []
    return body


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- launch checks -------------------------------------------------------------------------------


def test_launch_is_refused_while_the_provider_is_not_configured(live: LiveService) -> None:
    _contacts(live, [{"phone": p} for p in PHONES[:2]])
    cid = _create(live, provider="twilio")  # no [plugins.twilio] settings at all
    body = _refused(live, cid, "provider 'twilio' is not configured", "account_sid", "auth_token")
    assert len(body["extra"]) == 1
    # The same campaign through a configured provider launches.
    fine = _create(live, provider="fake")
    assert live.post(f"/api/campaigns/{fine}/launch").status_code == 202
    wait_for(lambda: live.stats(fine)["sent"] == 2, what="the fake campaign sent")
    # A test send through the unconfigured provider is refused the same way, and nothing is stored.
    refused = live.post(f"/api/campaigns/{cid}/test-send", {"phones": [PHONES[0]]})
    assert refused.status_code == 422 and "provider 'twilio' is not configured" in refused.json()["detail"]
    assert live.messages(cid) == []


def test_launch_is_refused_for_an_empty_audience(live: LiveService) -> None:
    nobody = _create(live)  # not one contact yet
    _refused(live, nobody, "audience", "is empty")

    _contacts(
        live,
        [{"phone": PHONES[0], "attributes": {"city": "Berlin"}}, {"phone": PHONES[1], "attributes": {"city": "Paris"}}],
    )
    no_match = _create(live, audience={"attributes": {"city": "Rome"}})
    _refused(live, no_match, '{"attributes": {"city": "Rome"}} is empty')
    unknown_ids = _create(live, audience={"contact_ids": [999_998, 999_999]})
    _refused(live, unknown_ids, "is empty")

    # Everyone it matches has opted out: nobody to text either.
    berlin = _create(live, audience={"attributes": {"city": "Berlin"}})
    _opt_out(live, PHONES[0])
    _refused(live, berlin, "is empty", "opted-out contacts are left out")

    # Someone to text: the refused draft launches once the audience has a contact.
    _contacts(live, [{"phone": PHONES[2], "attributes": {"city": "Berlin"}}])
    assert live.post(f"/api/campaigns/{berlin}/launch").status_code == 202
    wait_for(lambda: live.stats(berlin)["sent"] == 1, what="the one contact texted")
    assert [m["phone"] for m in live.messages(berlin)] == [PHONES[2]]


def test_create_refuses_a_schedule_at_in_the_past(live: LiveService) -> None:
    _contacts(live, [{"phone": PHONES[0]}])
    past = datetime.now(UTC) - timedelta(minutes=10)
    response = live.post(
        "/api/campaigns", {"name": "Late", "variants": [{"name": "A", "body": "Hi"}], "schedule_at": _iso(past)}
    )
    assert response.status_code == 422, response.text
    assert re.search(r"schedule_at \S+ lies in the past", response.json()["detail"]), response.text
    assert _count(live, Campaign) == 0
    # A few seconds of clock skew are no mistake (SCHEDULE_SKEW: 5 s); the future is fine.
    assert _create(live, schedule_at=_iso(datetime.now(UTC) - timedelta(seconds=2)))
    assert _create(live, schedule_at=_iso(datetime.now(UTC) + timedelta(hours=1)))


def test_launch_is_refused_once_schedule_at_has_passed(live: LiveService) -> None:
    _contacts(live, [{"phone": PHONES[0]}])
    cid = _create(live, schedule_at=_iso(datetime.now(UTC) + timedelta(hours=1)))
    with session_scope(live.engine) as session:  # the draft waited a day too long
        session.execute(
            update(Campaign).where(col(Campaign.id) == cid).values(schedule_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    _refused(live, cid, "schedule_at", "lies in the past")


def test_every_problem_is_named_at_once(live: LiveService) -> None:
    cid = _create(live, provider="twilio", schedule_at=_iso(datetime.now(UTC) + timedelta(hours=1)))
    with session_scope(live.engine) as session:
        session.execute(
            update(Campaign).where(col(Campaign.id) == cid).values(schedule_at=datetime.now(UTC) - timedelta(hours=1))
        )
    body = _refused(live, cid, "provider 'twilio' is not configured", "is empty", "lies in the past")
    assert len(body["extra"]) == 3


def test_a_launched_campaign_is_still_a_409_not_a_422(live: LiveService) -> None:
    _contacts(live, [{"phone": PHONES[0]}])
    cid = _create(live)
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    wait_for(lambda: live.stats(cid)["sent"] == 1, what="sent")
    _opt_out(live, PHONES[0])  # the audience is empty now: a second launch is still "launched already"
    again = live.post(f"/api/campaigns/{cid}/launch")
    assert again.status_code == 409 and "launched already" in again.json()["detail"], again.text


# -- test sends ----------------------------------------------------------------------------------


def _test_send(live: LiveService, cid: int, phones: list[str], **extra: Any) -> httpx.Response:
    return live.post(f"/api/campaigns/{cid}/test-send", {"phones": phones, **extra})


def _contacts_listed(live: LiveService) -> list[dict[str, Any]]:
    response = live.get("/api/contacts")
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_a_phone_that_is_no_contact_gets_sample_values_and_stays_no_contact(live: LiveService) -> None:
    _contacts(live, [{"phone": PHONES[0], "name": "Ana", "attributes": {"city": "Berlin"}}])
    cid = _create(live, "Hi {{ name }} ({{ phone }}), deals in {{ attributes.city }}: https://shop.example/bf")
    before = _contacts_listed(live)

    response = _test_send(live, cid, [STRANGER, PHONES[0]])
    assert response.status_code == 200, response.text
    stranger, ana = response.json()["messages"]
    assert stranger["contact_id"] is None and stranger["phone"] == STRANGER and stranger["phase"] == "test_send"
    assert stranger["body"].startswith(f"Hi Test ({STRANGER}), deals in : {live.url}/r/"), stranger["body"]
    assert ana["contact_id"] == before[0]["id"]
    assert ana["body"].startswith(f"Hi Ana ({PHONES[0]}), deals in Berlin: {live.url}/r/"), ana["body"]
    assert all(m["sent_at"] and m["provider_message_id"] for m in (stranger, ana))
    assert sorted(e["to"] for e in live.fake.ledger()) == sorted([STRANGER, PHONES[0]])
    assert _contacts_listed(live) == before  # nothing created, nothing changed

    # Its tracked link works and its click is recorded, without a contact; the click list, the
    # message log, the export and the stats all cope with it.
    [code] = re.findall(re.escape(live.url) + r"/r/([0-9A-Za-z]+)", stranger["body"])
    click = httpx.get(f"{live.url}/r/{code}", headers={"user-agent": "Mozilla/5.0 (iPhone) Mobile/15E148"})
    assert click.status_code == 302 and click.headers["location"] == "https://shop.example/bf"
    wait_for(lambda: _count(live, Click) == 1, what="the click stored")
    with session_scope(live.engine, read_only=True) as session:
        stored = session.scalars(select(Click)).one()
    assert stored.contact_id is None and stored.message_id == stranger["id"]
    clicks = live.get(f"/api/campaigns/{cid}/clicks")
    assert clicks.status_code == 200, clicks.text
    assert [(c["contact_id"], c["phone"]) for c in clicks.json()["items"]] == [(None, STRANGER)]
    logged = {m["phone"]: m["contact_id"] for m in live.messages(cid)}
    assert logged == {STRANGER: None, PHONES[0]: ana["contact_id"]}
    export = live.get(f"/api/campaigns/{cid}/export.csv")
    assert export.status_code == 200, export.text
    rows = {row["phone"].lstrip("'"): row for row in csv.DictReader(io.StringIO(export.text))}
    assert rows[STRANGER]["name"] == "" and rows[STRANGER]["phase"] == "test_send" and rows[STRANGER]["clicks"] == "1"
    assert rows[PHONES[0]]["name"] == "Ana"
    stats = live.stats(cid)
    assert (stats["recipients"], stats["sent"], stats["clicks"]["raw_total"]) == (0, 0, 0)
    for route in ("links", "click-timing", "devices", "funnel", "variants", "trend", "errors"):
        assert live.get(f"/api/campaigns/{cid}/stats/{route}").status_code == 200, route
    assert live.get(f"/campaigns/{cid}").status_code == 200  # the dashboard's message log
    assert live.get(f"/contacts/{ana['contact_id']}").status_code == 200  # Ana's page lists her test
    assert _contacts_listed(live) == before


def test_attributes_render_empty_for_a_phone_that_is_no_contact(live: LiveService) -> None:
    cid = _create(
        live,
        "{{ attributes.city }}|{{ attributes['zip'] | default('00000') }}|"
        "{% if attributes.vip %}VIP{% else %}all{% endif %}|{{ contact.attributes.lang | upper }}|{{ contact.name }}",
    )
    response = _test_send(live, cid, [STRANGER])
    assert response.status_code == 200, response.text
    assert [m["body"] for m in response.json()["messages"]] == ["|00000|all||Test"]
    assert _contacts_listed(live) == []

    # A contact's missing attribute is still the 422 it is at create time, and nothing is stored.
    _contacts(live, [{"phone": PHONES[0], "name": "Bob"}])
    city = _create(live, "Deals in {{ attributes.city }}", audience={"contact_ids": [999_999]})
    refused = _test_send(live, city, [PHONES[0]])
    assert refused.status_code == 422 and "city" in refused.json()["detail"], refused.text
    assert PHONES[0] in refused.json()["detail"]
    assert live.messages(city) == []


def test_an_opted_out_phone_is_refused_unless_allowed(live: LiveService) -> None:
    _contacts(live, [{"phone": PHONES[0], "name": "Ana"}, {"phone": PHONES[1], "name": "Bo"}])
    _opt_out(live, PHONES[1])
    cid = _create(live, "Hi {{ name }}: https://shop.example/bf")
    before = _contacts_listed(live)

    refused = _test_send(live, cid, [PHONES[0], PHONES[1]])
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert PHONES[1] in body["detail"] and "opted" in body["detail"] and "allow_opted_out" in body["detail"]
    assert PHONES[0] not in body["detail"]
    assert [row["phone"] for row in body["extra"]] == [PHONES[1]]
    assert live.messages(cid) == [] and live.fake.ledger() == []

    allowed = _test_send(live, cid, [PHONES[0], PHONES[1]], allow_opted_out=True)
    assert allowed.status_code == 200, allowed.text
    messages = allowed.json()["messages"]
    assert [(m["phone"], m["body"][:6]) for m in messages] == [(PHONES[0], "Hi Ana"), (PHONES[1], "Hi Bo:")]
    assert all(m["status"] in ("sent", "delivered") for m in messages), messages
    assert sorted(e["to"] for e in live.fake.ledger()) == [PHONES[0], PHONES[1]]
    assert _contacts_listed(live) == before  # Bo is still opted out, nobody changed
    bad_flag = _test_send(live, cid, [PHONES[0]], allow_opted_out="maybe")
    assert 400 <= bad_flag.status_code < 500


@pytest.mark.parametrize("phones", [[STRANGER], [STRANGER, PHONES[0]]])
def test_test_sends_never_create_contacts(live: LiveService, phones: list[str]) -> None:
    _contacts(live, [{"phone": PHONES[0]}])
    cid = _create(live, "Plain text, no variables")
    before = _contacts_listed(live)
    for _ in range(2):
        assert _test_send(live, cid, phones).status_code == 200
    assert _contacts_listed(live) == before
    with session_scope(live.engine, read_only=True) as session:
        assert session.scalar(select(func.count()).select_from(Contact)) == 1
        without = session.scalar(select(func.count()).select_from(Message).where(col(Message.contact_id).is_(None)))
    assert without == 2  # the stranger's two test messages
    # And an {"all": true} campaign launched afterwards texts the one real contact only.
    launched = _create(live)
    assert live.post(f"/api/campaigns/{launched}/launch").status_code == 202
    wait_for(lambda: live.stats(launched)["sent"] == 1, what="the campaign sent")
    assert [m["phone"] for m in live.messages(launched)] == [PHONES[0]]
