"""Rate limits on /api and /webhooks (api/rate_limit.py): the bucket math and the middleware on a
fake clock, the settings, and the whole service over a real socket, where /r is never limited."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.rate_limit import RateLimits, TokenBuckets
from core.db import make_engine, session_scope
from core.models import Campaign, Contact, Link, Message, ShortCode, Variant
from core.settings import Settings, SettingsError
from plugins.shortener import BuiltinShortener
from tests.live import LiveService

ROOT = Path(__file__).resolve().parent.parent
DESTINATION = "https://shop.example/limits"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Served:
    """What the middleware passed on or answered for one request."""

    def __init__(self, messages: list[dict[str, Any]], reached_app: bool) -> None:
        start = messages[0]
        self.status: int = start["status"]
        self.headers = {k.decode(): v.decode() for k, v in start["headers"]}
        self.body = b"".join(m.get("body", b"") for m in messages[1:])
        self.reached_app = reached_app

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    limits: RateLimits, path: str, peer: str = "203.0.113.7", headers: list[tuple[bytes, bytes]] | None = None
) -> Served:
    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": headers or [], "client": (peer, 50000)}
    asyncio.run(limits.middleware(app)(scope, receive, send))
    return Served(sent, bool(reached))


# -- the bucket --------------------------------------------------------------------------------
def test_a_burst_is_served_then_refused_until_the_bucket_refills() -> None:
    buckets = TokenBuckets((3, 1.0), "TEXTPULSE_RATE_LIMIT_API")
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a", 0.0) == pytest.approx(1 / 3)  # one token comes back every 1/3 s
    assert buckets.take("b", 0.0) == 0  # another client has a bucket of its own
    assert buckets.take("a", 0.2) == pytest.approx(1 / 3 - 0.2)  # a refused request takes nothing
    assert buckets.take("a", 0.34) == 0
    assert buckets.take("a", 0.34) > 0
    # A long rest fills the bucket up to the burst, never beyond it.
    assert [buckets.take("a", 100.0) for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a", 100.0) > 0


def test_a_long_window_refills_slowly() -> None:
    buckets = TokenBuckets((2, 10.0), "TEXTPULSE_RATE_LIMIT_API")  # a burst of 2, then one every 5 s
    assert buckets.take("a", 0.0) == buckets.take("a", 0.0) == 0
    assert buckets.take("a", 1.0) == pytest.approx(4.0)
    assert buckets.take("a", 5.0) == 0


# -- the middleware ----------------------------------------------------------------------------
def test_over_the_api_limit_is_a_429_with_retry_after_and_the_error_shape() -> None:
    clock = Clock()
    limits = RateLimits((2, 10.0), None, clock=clock)
    assert [call(limits, "/api/contacts").status for _ in range(2)] == [200, 200]
    clock.now += 0.5
    refused = call(limits, "/api/contacts")
    assert refused.status == 429 and not refused.reached_app
    assert refused.headers["retry-after"] == "5"  # 4.5 s to the next token, rounded up
    assert refused.headers["content-type"] == "application/json"
    assert int(refused.headers["content-length"]) == len(refused.body)
    body = refused.json()
    assert set(body) == {"status_code", "detail", "extra"}
    assert body["status_code"] == 429 and body["extra"] == {"limit": "2/10", "retry_after": 5}
    assert "TEXTPULSE_RATE_LIMIT_API" in body["detail"]
    clock.now += 4.5
    assert call(limits, "/api/campaigns").status == 200  # served again once a token is back
    assert call(limits, "/api/campaigns").status == 429


def test_retry_after_is_at_least_one_second() -> None:
    limits = RateLimits((50, 1.0), None, clock=Clock())
    for _ in range(50):
        call(limits, "/api/contacts")
    refused = call(limits, "/api/contacts")  # the next token is 20 ms away
    assert refused.status == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["extra"] == {"limit": "50/1", "retry_after": 1}


def test_webhooks_are_limited_by_their_own_setting() -> None:
    limits = RateLimits((1, 60.0), (3, 60.0), clock=Clock())
    assert call(limits, "/api/contacts").status == 200
    assert call(limits, "/api/contacts").status == 429
    statuses = [call(limits, "/webhooks/fake/status").status for _ in range(3)]
    assert statuses == [200, 200, 200]  # /api's exhausted bucket is not the webhooks'
    refused = call(limits, "/webhooks/fake/inbound")
    assert refused.status == 429
    assert refused.json()["extra"]["limit"] == "3/60" and "TEXTPULSE_RATE_LIMIT_WEBHOOKS" in refused.json()["detail"]


def test_only_api_and_webhooks_are_limited() -> None:
    limits = RateLimits((1, 60.0), (1, 60.0), clock=Clock())
    call(limits, "/api/contacts")
    call(limits, "/webhooks/fake/status")
    for path in ["/r/Ab3dE5", "/health", "/metrics", "/schema", "/schema/openapi.json", "/", "/campaigns/1", "/apis"]:
        served = [call(limits, path) for _ in range(5)]
        assert all(s.status == 200 and s.reached_app for s in served), path


def test_off_disables_a_limit() -> None:
    settings = Settings.from_env({"TEXTPULSE_RATE_LIMIT_API": "off", "TEXTPULSE_RATE_LIMIT_WEBHOOKS": "2/60"})
    assert settings.rate_limit_api is None and settings.rate_limit_webhooks == (2, 60.0)
    limits = RateLimits.from_settings(settings)
    assert limits is not None
    assert all(call(limits, "/api/contacts").status == 200 for _ in range(500))
    both_off = Settings.from_env({"TEXTPULSE_RATE_LIMIT_API": "OFF", "TEXTPULSE_RATE_LIMIT_WEBHOOKS": "off"})
    assert RateLimits.from_settings(both_off) is None  # no middleware at all


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    limits = RateLimits((1, 60.0), None, [ipaddress.ip_network("10.0.0.0/8")], clock=Clock())

    def via(peer: str, forwarded: str) -> int:
        return call(limits, "/api/contacts", peer, [(b"x-forwarded-for", forwarded.encode())]).status

    assert via("10.0.0.1", "198.51.100.1") == 200
    assert via("10.0.0.2", "198.51.100.1") == 429  # the same client behind another of our proxies
    assert via("10.0.0.1", "198.51.100.2") == 200  # another client behind the same proxy
    # The client cannot pick its own key by writing the header: the hop left of it is not believed.
    assert via("10.0.0.1", "192.0.2.99, 198.51.100.2") == 429
    # A peer that is not a trusted proxy is the client, whatever header it sends.
    assert via("203.0.113.9", "198.51.100.3") == 200
    assert via("203.0.113.9", "198.51.100.4") == 429


def test_an_ipv6_client_is_its_64() -> None:
    limits = RateLimits((1, 60.0), None, clock=Clock())
    assert call(limits, "/api/contacts", "2001:db8::1").status == 200
    assert call(limits, "/api/contacts", "2001:db8::ffff:2").status == 429  # same /64
    assert call(limits, "/api/contacts", "2001:db8:0:1::1").status == 200  # the next /64
    assert call(limits, "/api/contacts", "::ffff:198.51.100.5").status == 200
    assert call(limits, "/api/contacts", "198.51.100.5").status == 429  # an IPv4 client on a dual-stack socket


def test_the_bucket_map_stays_bounded_under_many_addresses() -> None:
    limits = RateLimits((1, 3600.0), None, clock=Clock(), max_clients=100)
    assert limits.api is not None
    assert call(limits, "/api/contacts", "198.51.100.1").status == 200
    assert call(limits, "/api/contacts", "198.51.100.1").status == 429
    for n in range(5000):
        assert call(limits, "/api/contacts", str(ipaddress.IPv4Address("10.0.0.0") + n)).status == 200
        assert len(limits.api.buckets) <= 100
    assert len(limits.api.buckets) == 100
    # The client seen longest ago was forgotten: it is let through with a full bucket, never locked out.
    assert call(limits, "/api/contacts", "198.51.100.1").status == 200


# -- the settings ------------------------------------------------------------------------------
def test_defaults_are_generous() -> None:
    settings = Settings.from_env({})
    assert settings.rate_limit_api == (100, 1.0)
    assert settings.rate_limit_webhooks == (50_000, 1.0)
    assert Settings.from_env({"TEXTPULSE_RATE_LIMIT_API": " 600/60 "}).rate_limit_api == (600, 60.0)


@pytest.mark.parametrize("name", ["TEXTPULSE_RATE_LIMIT_API", "TEXTPULSE_RATE_LIMIT_WEBHOOKS"])
@pytest.mark.parametrize("value", ["lots", "100", "0/1", "-5/1", "10/0", "10/-1", "10/nan", "10/inf", "1.5/1", "no"])
def test_a_malformed_limit_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"{name} must be N/SECONDS")):
        Settings.from_env({name: value})


def test_a_malformed_limit_stops_the_start() -> None:
    env = {**os.environ, "TEXTPULSE_RATE_LIMIT_WEBHOOKS": "fast", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "textpulse.cli", "api"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "TEXTPULSE_RATE_LIMIT_WEBHOOKS must be N/SECONDS" in done.stderr and "'fast'" in done.stderr


# -- over a real socket ------------------------------------------------------------------------
def seed_code(database_url: str) -> str:
    """One delivered message with one tracked code to DESTINATION."""
    code = BuiltinShortener().new_code()
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        campaign = Campaign(name="limits", status="completed", tracking={"shorten_links": True})
        session.add(campaign)
        session.flush()
        variant = Variant(campaign_id=campaign.id, name="A", body=f"Go {DESTINATION}")
        contact = Contact(phone="+12025550900")
        session.add_all([variant, contact])
        session.flush()
        link = Link(campaign_id=campaign.id or 0, variant_id=variant.id or 0, position=0, destination=DESTINATION)
        message = Message(
            campaign_id=campaign.id or 0,
            contact_id=contact.id or 0,
            variant_id=variant.id,
            phone=contact.phone,
            body=f"Go http://127.0.0.1/r/{code}",
            status="delivered",
            provider="fake",
            idempotency_key="limits-1",
        )
        session.add_all([link, message])
        session.flush()
        session.add(ShortCode(code=code, message_id=message.id or 0, link_id=link.id or 0, destination=DESTINATION))
    engine.dispose()
    return code


@pytest.fixture
def limited(scaled_database_url: str, temporal_address: str, tmp_path: Path) -> Iterator[LiveService]:
    """The service with tiny limits; the test client (127.0.0.1) is also a trusted proxy."""
    service = LiveService(
        database_url=scaled_database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        run_worker=False,
        env={
            "TEXTPULSE_RATE_LIMIT_API": "3/60",
            "TEXTPULSE_RATE_LIMIT_WEBHOOKS": "2/60",
            "TEXTPULSE_TRUSTED_PROXIES": "127.0.0.1/32",
        },
    )
    service.start()
    yield service
    service.stop()


def test_the_service_limits_api_and_webhooks_and_never_the_redirect(
    limited: LiveService, scaled_database_url: str
) -> None:
    code = seed_code(scaled_database_url)
    assert [limited.get("/api/contacts").status_code for _ in range(3)] == [200, 200, 200]
    refused = limited.get("/api/contacts")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    body = refused.json()
    assert body["status_code"] == 429 and body["extra"]["limit"] == "3/60"
    assert body["extra"]["retry_after"] == int(refused.headers["retry-after"])

    # The redirect from the very same address: never limited.
    for _ in range(10):
        response = httpx.get(f"{limited.url}/r/{code}")
        assert response.status_code == 302 and response.headers["location"] == DESTINATION
    assert all(limited.get("/health").status_code == 200 for _ in range(5))

    # Behind a trusted proxy (here, the test itself) the client is the forwarded address.
    assert limited.get("/api/contacts", headers={"x-forwarded-for": "198.51.100.7"}).status_code == 200
    assert limited.get("/api/contacts").status_code == 429

    # The webhooks have a bucket and a limit of their own.
    callback = {"content": b'{"message_id": "nope", "status": "sent"}', "headers": {"content-type": "application/json"}}
    statuses = [limited.post("/webhooks/fake/status", **callback).status_code for _ in range(3)]
    assert 429 not in statuses[:2] and statuses[2] == 429
