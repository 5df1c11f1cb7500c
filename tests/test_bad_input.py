"""Bad input gets a clear 4xx and loses nothing (over HTTP, against the running service)."""

from __future__ import annotations

from sqlalchemy import func, select

from core.db import session_scope
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
