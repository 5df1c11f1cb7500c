"""The example provider plugin of docs/plugins.md (examples/textpulse-postbird), installed into the
venv with pip like an integrator would, found through its entry point, and sent through."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import importlib.metadata
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

import textpulse
from core.db import session_scope
from core.hooks import abilities
from core.hooks.registry import load_plugins
from core.models import Contact
from core.settings import Settings
from tests.live import LiveService, wait_for
from tests.packages import installed as installed_package
from textpulse import OutgoingMessage

PACKAGE = Path(__file__).resolve().parent.parent / "examples" / "textpulse-postbird"
SECRET, API_KEY = "whsec-test", "pb-key"
PHONES = [f"+1202555{n:04d}" for n in range(700, 706)]
INVALID, OPTED_OUT = PHONES[4], PHONES[5]


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    with installed_package(PACKAGE, "textpulse-postbird", "textpulse_postbird"):
        yield


def _sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


class Postbird:
    """A stand-in Postbird gateway: deduplicates by Idempotency-Key and posts signed callbacks."""

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}  # idempotency key -> message
        self.requests: list[dict[str, Any]] = []
        self.callback_answers: list[int] = []
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                data = json.loads(self.rfile.read(int(self.headers["content-length"])))
                key = self.headers.get("idempotency-key", "")
                with gateway.lock:
                    gateway.requests.append({"json": data, "key": key, "auth": self.headers.get("authorization")})
                if self.headers.get("authorization") != f"Bearer {API_KEY}":
                    self._answer(401, {"error": {"code": "unauthorized", "message": "bad api key"}})
                    return
                if data["to"] == INVALID:
                    self._answer(422, {"error": {"code": "invalid_number", "message": f"{data['to']} is no mobile"}})
                    return
                if data["to"] == OPTED_OUT:
                    self._answer(422, {"error": {"code": "recipient_opted_out", "message": "recipient opted out"}})
                    return
                with gateway.lock:
                    message = gateway.messages.get(key)
                    new = message is None
                    if new:
                        message = gateway.messages[key] = {"id": f"pb_{uuid.uuid4().hex}", **data}
                assert message is not None
                if new:
                    threading.Thread(target=gateway._callbacks, args=(message,), daemon=True).start()
                self._answer(201, {"id": message["id"]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _callbacks(self, message: dict[str, Any]) -> None:
        time.sleep(0.05)
        for state in ("accepted", "delivered"):
            body = json.dumps({"id": message["id"], "state": state, "at": "2026-11-23T12:00:00+00:00"}).encode()
            for _ in range(50):
                try:
                    response = httpx.post(
                        message["callback_url"],
                        content=body,
                        timeout=30,
                        headers={"content-type": "application/json", "x-postbird-signature": _sign(body)},
                    )
                    self.callback_answers.append(response.status_code)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_installed_package_is_found_through_its_entry_point(installed: None, tmp_path: Path) -> None:
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="textpulse")}
    assert found["postbird"] == "textpulse_postbird"
    registry = load_plugins(Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path)}), config={})  # no plugins.toml
    try:
        provider = registry.providers["postbird"]
        assert isinstance(provider, textpulse.Provider) and provider.name == "postbird"
        assert registry.reports_delivery("postbird") is True
        assert abilities.unsubscribed_error_codes(provider) == {"recipient_opted_out"}
        assert abilities.config_problems(provider) == [
            "postbird: api_url is not set",
            "postbird: api_key is not set",
            "postbird: webhook_secret is not set",
        ]
        refused = provider.send_batch([OutgoingMessage(1, PHONES[0], "Hi", "k1", "http://x/cb")])
        assert (refused[0].accepted, refused[0].error_code) == (False, "not_configured")
    finally:
        registry.close()


def test_a_campaign_goes_out_through_the_example_plugin(
    installed: None, database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    gateway = Postbird()
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        plugin_config={"plugins": {"postbird": {"api_url": gateway.url, "api_key": API_KEY, "webhook_secret": SECRET}}},
    )
    live.start()
    try:
        live.post("/api/contacts", [{"phone": p, "name": f"P{i}"} for i, p in enumerate(PHONES)])
        cid = live.post(
            "/api/campaigns",
            {"name": "Postbird", "provider": "postbird", "variants": [{"name": "A", "body": "Hi {{ name }}"}]},
        ).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        stats = wait_for(
            lambda: (s := live.stats(cid))["delivered"] + s["failed"] == len(PHONES) and s,
            what="a final status for every message",
            timeout=60,
        )
        assert (stats["sent"], stats["delivered"], stats["failed"]) == (4, 4, 2)
        assert Counter(m["to"] for m in gateway.messages.values()) == Counter(PHONES[:4])
        by_phone = {m["phone"]: m for m in live.messages(cid)}
        for request in gateway.requests:
            message = by_phone[request["json"]["to"]]
            assert request["key"] == f"c{cid}-all-{message['contact_id']}"  # our idempotency key, passed on
            assert request["json"] == {
                "to": message["phone"],
                "text": message["body"],
                "callback_url": f"{live.url}/webhooks/postbird/status",
            }
        assert by_phone[PHONES[0]]["provider_message_id"].startswith("pb_")
        assert (by_phone[INVALID]["error_code"], by_phone[INVALID]["error_text"]) == (
            "invalid_number",
            f"{INVALID} is no mobile",
        )
        wait_for(lambda: len(gateway.callback_answers) == 8, what="every callback answered")
        assert set(gateway.callback_answers) == {200}
        with session_scope(live.engine) as session:  # the plugin's "recipient opted out" opts the contact out
            opted = [c.phone for c in session.scalars(select(Contact).where(col(Contact.opted_out_at).is_not(None)))]
        assert opted == [OPTED_OUT]

        # Inbound through the plugin: HELP gets the help text back; a forged signature is refused.
        body = json.dumps({"id": "in1", "from": PHONES[0], "to": "+15550000", "text": "HELP"}).encode()
        url = f"{live.url}/webhooks/postbird/inbound"
        answer = httpx.post(
            url, content=body, headers={"content-type": "application/json", "x-postbird-signature": _sign(body)}
        )
        assert answer.json() == {"reply": "Reply STOP to unsubscribe or START to subscribe again."}
        forged = httpx.post(
            url, content=body, headers={"content-type": "application/json", "x-postbird-signature": "0" * 64}
        )
        assert (forged.status_code, forged.json()["detail"]) == (
            403,
            "X-Postbird-Signature is missing or does not match",
        )

        # A send retried with the same idempotency key is answered with the same id, not sent again.
        provider = live.service.registry.providers["postbird"] if live.service else None
        assert provider is not None
        again = provider.send_batch(
            [
                OutgoingMessage(
                    by_phone[PHONES[0]]["id"],
                    PHONES[0],
                    by_phone[PHONES[0]]["body"],
                    f"c{cid}-all-{by_phone[PHONES[0]]['contact_id']}",
                    "http://x/cb",
                )
            ]
        )
        assert again[0].provider_message_id == by_phone[PHONES[0]]["provider_message_id"]
        assert len(gateway.messages) == 4
    finally:
        live.stop()
        gateway.close()
