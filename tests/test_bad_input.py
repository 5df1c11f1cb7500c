"""Bad input gets a clear 4xx and loses nothing (over HTTP, against the running service)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from core.db import session_scope
from core.migrate import upgrade
from core.models import Campaign, Contact, Variant
from tests.live import LiveService


def _count(live: LiveService, model: type) -> int:
    with session_scope(live.engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_invalid_phone_numbers_are_reported_per_row_and_valid_rows_kept(live: LiveService) -> None:
    response = live.post(
        "/api/contacts",
        [
            {"phone": "+12025550100", "name": "Ada"},
            {"phone": "2025550101"},
            {"phone": "+1202555"},
            {"name": "no phone"},
            {"phone": "+4915112345678", "timezone": "Mars/Olympus"},
            {"phone": "+4915112345679", "timezone": "Europe/Berlin", "attributes": {"city": "Berlin"}},
            "not an object",
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["created"] == 2 and body["updated"] == 0
    assert [row["index"] for row in body["invalid"]] == [1, 2, 3, 4, 6]
    errors = {row["index"]: row["error"] for row in body["invalid"]}
    assert "country code" in errors[1] and "E.164" in errors[1]
    assert "not a valid phone number" in errors[2] or "not a phone number" in errors[2]
    assert errors[3] == "phone is required"
    assert "Mars/Olympus" in errors[4]
    listed = live.get("/api/contacts").json()["items"]
    assert sorted(c["phone"] for c in listed) == ["+12025550100", "+4915112345679"]

    again = live.post("/api/contacts", [{"phone": "+1 (202) 555-0100", "name": "Ada L."}]).json()
    assert again == {"created": 0, "updated": 1, "invalid": []}
    assert live.get("/api/contacts", params={"phone": "+12025550100"}).json()["items"][0]["name"] == "Ada L."


def test_contacts_filter_by_attribute_and_opt_out(live: LiveService) -> None:
    live.post(
        "/api/contacts",
        [{"phone": f"+1202555010{i}", "attributes": {"city": c}} for i, c in enumerate(["Berlin", "Paris", "Berlin"])],
    )
    berlin = live.get("/api/contacts", params={"attribute.city": "Berlin"}).json()["items"]
    assert [c["phone"] for c in berlin] == ["+12025550100", "+12025550102"]
    assert live.get("/api/contacts", params={"opted_out": "true"}).json()["items"] == []
    page = live.get("/api/contacts", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next"]
    rest = live.get("/api/contacts", params={"limit": 2, "cursor": page["next"]}).json()
    assert [c["phone"] for c in rest["items"]] == ["+12025550102"] and rest["next"] is None
    bad = live.get("/api/contacts", params={"cursor": "garbage"})
    assert bad.status_code == 400 and "cursor" in bad.json()["detail"]


def test_unknown_campaign_is_404(live: LiveService) -> None:
    for method, path in [
        ("get", "/api/campaigns/999"),
        ("post", "/api/campaigns/999/launch"),
        ("get", "/api/campaigns/999/stats"),
        ("get", "/api/campaigns/999/messages"),
    ]:
        response = getattr(live.http, method)(path)
        assert response.status_code == 404, (path, response.text)
        assert "campaign 999 does not exist" in response.json()["detail"]


def test_launching_twice_is_409(live: LiveService) -> None:
    live.post("/api/contacts", [{"phone": "+12025550100"}])
    cid = live.post("/api/campaigns", {"name": "Once", "variants": [{"name": "A", "body": "Hi"}]}).json()["id"]
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    second = live.post(f"/api/campaigns/{cid}/launch")
    assert second.status_code == 409
    assert "launched already" in second.json()["detail"]


def test_undefined_template_variable_is_422_naming_it_and_nothing_is_stored(live: LiveService) -> None:
    live.post(
        "/api/contacts",
        [
            {"phone": "+12025550100", "name": "Ada", "attributes": {"city": "Berlin"}},
            {"phone": "+12025550101", "name": "Bob"},
        ],
    )
    before = (_count(live, Campaign), _count(live, Variant))
    response = live.post(
        "/api/campaigns",
        {
            "name": "Broken",
            "variants": [
                {"name": "A", "body": "Hi {{ name }}"},
                {"name": "B", "body": "Deals in {{ attributes.city }} for {{ first_name }}"},
            ],
        },
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "'B'" in detail and "first_name" in detail
    assert (_count(live, Campaign), _count(live, Variant)) == before

    # Defined for one contact only: the other one is named.
    response = live.post(
        "/api/campaigns", {"name": "City", "variants": [{"name": "A", "body": "{{ attributes.city }}"}]}
    )
    assert response.status_code == 422
    assert "+12025550101" in response.json()["detail"] and "city" in response.json()["detail"]

    syntax = live.post("/api/campaigns", {"name": "Syntax", "variants": [{"name": "A", "body": "Hi {{ name "}]})
    assert syntax.status_code == 422 and "template error" in syntax.json()["detail"]
    assert (_count(live, Campaign), _count(live, Variant)) == before


def test_campaign_body_is_validated_with_field_names(live: LiveService) -> None:
    cases = [
        ({"name": "x", "variants": []}, "variants"),
        ({"name": "x", "variants": [{"name": "A", "body": "a"}, {"name": "A", "body": "b"}]}, "unique"),
        ({"name": "x", "variants": [{"name": "A", "body": "a"}], "provider": "nope"}, "nope"),
        ({"name": "x", "variants": [{"name": "A", "body": "a"}], "audience": {}}, "audience"),
        (
            {"name": "x", "variants": [{"name": "A", "body": "a"}], "quiet_hours": {"start": "25:00", "end": "08:00"}},
            "25:00",
        ),
        ({"name": "x", "variants": [{"name": "A", "body": "a"}], "colour": "red"}, "colour"),
    ]
    for body, needle in cases:
        response = live.post("/api/campaigns", body)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert needle in response.text, (needle, response.text)
    assert _count(live, Campaign) == 0


def test_oversized_body_is_413(live: LiveService) -> None:
    response = live.post(
        "/api/contacts",
        content=b"[" + b'{"phone":"+12025550100"},' * 60_000 + b"{}]",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert _count(live, Contact) == 0


def test_health_and_openapi(live: LiveService) -> None:
    assert live.get("/health").json() == {"status": "ok", "database": "ok", "temporal": "ok"}
    schema = live.get("/schema/openapi.json").json()
    for path in [
        "/api/contacts",
        "/api/campaigns",
        "/api/campaigns/{campaign_id}/launch",
        "/api/campaigns/{campaign_id}/stats",
        "/webhooks/{provider_name}/status",
    ]:
        assert path in schema["paths"], path


def test_a_body_that_is_not_utf8_or_nested_too_deep_is_400_and_stores_nothing(live: LiveService) -> None:
    json_headers = {"content-type": "application/json"}
    not_utf8 = live.post(
        "/api/contacts", content=b'[{"phone": "+12025550100", "name": "\xff\xfe"}]', headers=json_headers
    )
    assert not_utf8.status_code == 400, not_utf8.text
    assert "UTF-8" in not_utf8.json()["detail"]
    deep = live.post("/api/campaigns", content=b"[" * 100_000 + b"]" * 100_000, headers=json_headers)
    assert deep.status_code == 400, deep.text
    assert "nested too deeply" in deep.json()["detail"]
    assert _count(live, Contact) == 0
    assert _count(live, Campaign) == 0


def test_ids_outside_64_bits_or_below_1_are_400_naming_the_parameter(live: LiveService) -> None:
    for path in [
        f"/api/campaigns/{2**63}/stats",
        f"/api/campaigns/{10**30}",
        "/api/campaigns/0/messages",
        "/api/campaigns/-1/stats/links",
        f"/api/contacts/{2**64}",
        f"/api/workflows/runs/{2**63}",
        f"/api/campaigns?parent_id={2**63}",
    ]:
        response = live.get(path)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["extra"][0]["key"] in {"campaign_id", "contact_id", "run_id", "parent_id"}, path
    # The largest id is an id: a 404 from the table (BIGINT on PostgreSQL, migration 0011), not a 500.
    assert live.get(f"/api/campaigns/{2**63 - 1}").status_code == 404
    assert live.get(f"/api/workflows/runs/{2**31}").status_code == 404
    too_big = live.post(
        "/api/campaigns",
        json={"name": "x", "variants": [{"name": "A", "body": "hi"}], "audience": {"contact_ids": [2**63]}},
    )
    assert too_big.status_code == 400, too_big.text
    assert "contact_ids" in too_big.text
    event = live.post("/api/events", json={"contact_id": 2**64, "name": "purchase"})
    assert event.status_code == 400, event.text
    assert _count(live, Campaign) == 0


def test_an_unexpected_error_is_a_plain_500_logged_with_its_traceback(tmp_path: Path) -> None:
    from litestar import get
    from litestar.testing import TestClient
    from structlog.testing import capture_logs

    from api.app import create_app
    from core.settings import Settings

    settings = Settings.from_env(
        {"TEXTPULSE_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "TEXTPULSE_DATA_DIR": str(tmp_path)}
    )
    upgrade(settings.database_url)
    app = create_app(settings)

    @get("/api/boom", sync_to_thread=False)
    def boom() -> None:
        raise ZeroDivisionError("a bug")

    app.register(boom)
    with capture_logs() as logs, TestClient(app=app) as client:
        response = client.get("/api/boom")
    assert response.status_code == 500
    assert response.json()["detail"] == "Internal Server Error"  # nothing of the bug reaches the client
    assert "a bug" not in response.text
    errors = [e for e in logs if e["event"] == "unhandled error"]
    assert len(errors) == 1 and errors[0]["error"] == "ZeroDivisionError"
    assert isinstance(errors[0]["exc_info"], ZeroDivisionError)


def test_what_a_schema_cannot_say_is_refused_clearly_too(live: LiveService) -> None:
    """Found by schemathesis and review: each of these was a 500."""
    # A time zone name that is a directory of the zone database, or too long for a file name.
    upserted = live.post(
        "/api/contacts",
        [{"phone": "+12025550100", "timezone": "Europe"}, {"phone": "+12025550101", "timezone": "x" * 300}],
    )
    assert upserted.status_code == 200, upserted.text
    assert [row["index"] for row in upserted.json()["invalid"]] == [0, 1]
    assert _count(live, Contact) == 0
    created = live.post(
        "/api/campaigns", json={"name": "t", "variants": [{"name": "A", "body": "hi"}], "audience": {"all": True}}
    )
    campaign_id = created.json()["id"]
    trend = live.get(f"/api/campaigns/{campaign_id}/stats/trend", params={"tz": "Europe"})
    assert trend.status_code == 400 and "IANA" in trend.text, trend.text
    # NUL characters, which PostgreSQL's text columns cannot store: in JSON, a query string, a CSV.
    named = live.post("/api/contacts", [{"phone": "+12025550102", "name": "a\u0000b"}])
    assert named.status_code == 400 and "NUL" in named.text, named.text
    assert live.get("/api/contacts", params={"phone": "+1\x00"}).status_code == 400
    csv_headers = {"content-type": "text/csv"}
    assert (
        live.post("/api/contacts/import", content=b"phone,name\n+12025550103,a\x00b\n", headers=csv_headers).status_code
        == 400
    )
    # A CSV cell past the csv module's field limit.
    huge = live.post(
        "/api/contacts/import", content=b'phone,name\n+12025550104,"' + b"x" * 200_000 + b'"\n', headers=csv_headers
    )
    assert huge.status_code == 400 and "cannot be read" in huge.text, huge.text
    assert _count(live, Contact) == 0
    # A page cursor naming an id past 64 bits, and the dashboard's `before`.
    import base64

    cursor = base64.urlsafe_b64encode(f"id:{10**20}".encode()).decode().rstrip("=")
    assert live.get("/api/contacts", params={"cursor": cursor}).status_code == 400
    assert live.get("/", params={"before": 2**63}).status_code == 400
    # Webhooks: JSON nested past the decoder's limit, and NUL characters.
    json_headers = {"content-type": "application/json"}
    deep = live.post("/webhooks/fake/status", content=b"[" * 30_000 + b"]" * 30_000, headers=json_headers)
    assert deep.status_code == 400, deep.text
    nul = live.post(
        "/webhooks/fake/status", content=b'{"message_id": "a\\u0000", "status": "sent"}', headers=json_headers
    )
    assert nul.status_code == 400 and "NUL" in nul.text, nul.text
    inbound = live.post("/webhooks/fake/inbound", content=b"[" * 30_000 + b"]" * 30_000, headers=json_headers)
    assert inbound.status_code == 400, inbound.text
