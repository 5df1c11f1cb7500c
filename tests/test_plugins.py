"""The plugin manager: built-ins, plugins.toml, the entry-point group, settings from env; the
public SDK (`textpulse`) and the typed abilities of providers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pluggy
import pytest

import textpulse
from core.hooks import abilities, hookspecs, payloads
from core.hooks.registry import PluginError, WellformedCodes, load_plugins, read_config
from core.settings import Settings


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path), **env})


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A third-party plugin module on sys.path: a provider and a shortener."""
    (tmp_path / "acme_sms.py").write_text(
        textwrap.dedent("""
        from textpulse import SendResult, hookimpl

        class AcmeProvider:
            name = "acme"
            reports_delivery = False
            def __init__(self, settings):
                self.settings = settings
            def send_batch(self, messages):
                return [SendResult(m.message_id, True, provider_message_id=f"acme-{m.message_id}") for m in messages]

        class AcmeShortener:
            def new_code(self):
                return "AcmeCode1"
            def tracked_url(self, code, public_url):
                return f"https://acme.example/{code}"

        @hookimpl
        def register_providers(register, config):
            register(AcmeProvider(config.plugin_settings("acme")))

        @hookimpl
        def make_shortener(config):
            return AcmeShortener()
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "acme_sms"
    sys.modules.pop("acme_sms", None)


def test_builtins_load_without_a_config_file(tmp_path: Path) -> None:
    registry = load_plugins(_settings(tmp_path, TEXTPULSE_CONFIG=str(tmp_path / "missing.toml")))
    try:
        assert "fake" in registry.providers
        assert registry.shortener.tracked_url("abcdefgh", "http://x") == "http://x/r/abcdefgh"
        assert len(registry.shortener.new_code()) >= 7
    finally:
        registry.close()


def test_plugins_toml_enables_a_module_whose_settings_come_from_file_and_env(
    tmp_path: Path, plugin_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text(f'[plugins]\nenabled = ["{plugin_module}"]\n[plugins.acme]\nregion = "eu"\ntoken = "file"\n')
    monkeypatch.setenv("TEXTPULSE_ACME_TOKEN", "from-env")
    monkeypatch.setenv("TEXTPULSE_ACME_RETRIES", "3")
    registry = load_plugins(_settings(tmp_path, TEXTPULSE_CONFIG=str(config)))
    try:
        acme: Any = registry.providers["acme"]
        assert acme.settings == {"region": "eu", "token": "from-env", "retries": 3}
        # A third-party shortener answers before the built-in one (which is trylast).
        assert registry.shortener.new_code() == "AcmeCode1"
        assert "fake" in registry.providers
    finally:
        registry.close()


def test_a_builtin_can_be_disabled(tmp_path: Path) -> None:
    registry = load_plugins(_settings(tmp_path), config={"plugins": {"disabled": ["fake"]}})
    assert "fake" not in registry.providers
    with pytest.raises(KeyError, match="unknown provider 'fake'"):
        registry.provider("fake")


def test_entry_point_group_textpulse_is_loaded(
    tmp_path: Path, plugin_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    dist = tmp_path / "acme_sms-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-sms\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[textpulse]\nacme = {plugin_module}\n")
    importlib.invalidate_caches()
    assert any(ep.name == "acme" for ep in importlib.metadata.entry_points(group="textpulse"))
    registry = load_plugins(_settings(tmp_path), config={})
    try:
        assert "acme" in registry.providers
    finally:
        registry.close()


def test_errors_are_clear(tmp_path: Path, plugin_module: str) -> None:
    with pytest.raises(PluginError, match="cannot be imported"):
        load_plugins(_settings(tmp_path), config={"plugins": {"enabled": ["no_such_module_here"]}})
    broken = tmp_path / "broken.toml"
    broken.write_text("[plugins\n")
    with pytest.raises(PluginError, match="broken.toml"):
        read_config(broken)
    (tmp_path / "dup_sms.py").write_text(
        "from textpulse import hookimpl\n"
        "class P:\n    name = 'fake'\n"
        "@hookimpl\ndef register_providers(register, config):\n    register(P())\n"
    )
    with pytest.raises(PluginError, match="two plugins register a provider named 'fake'"):
        load_plugins(_settings(tmp_path), config={"plugins": {"enabled": ["dup_sms"]}})
    sys.modules.pop("dup_sms", None)
    (tmp_path / "nameless_filter.py").write_text(
        "from textpulse import hookimpl\n"
        "class F:\n    def judge(self, click):\n        return 0.0, None\n"
        "@hookimpl\ndef register_bot_filters(register, config):\n    register(F())\n"
    )
    with pytest.raises(PluginError, match="a bot filter needs a `name`"):
        load_plugins(_settings(tmp_path), config={"plugins": {"enabled": ["nameless_filter"]}})
    sys.modules.pop("nameless_filter", None)


def test_every_hook_has_a_docstring() -> None:
    specs = [getattr(hookspecs, name) for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "textpulse_spec")]
    assert len(specs) >= 9
    for spec in specs:
        assert spec.__doc__ and len(spec.__doc__.strip()) > 20, spec.__name__


def test_the_sdk_exports_what_plugins_import_and_stays_light() -> None:
    for name in textpulse.__all__:
        assert getattr(textpulse, name) is not None, name
    assert {"hookimpl", "Provider", "Shortener", "BotFilter", "PluginContext", "SendResult"} <= set(textpulse.__all__)
    assert textpulse.hookimpl is hookspecs.hookimpl
    heavy = ("litestar", "temporalio", "sqlalchemy", "sqlmodel", "httpx")
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, textpulse; print([m for m in {heavy!r} if m in sys.modules])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert loaded == "[]"


def test_provider_abilities_come_with_their_defaults(tmp_path: Path, plugin_module: str) -> None:
    registry = load_plugins(_settings(tmp_path), config={"plugins": {"enabled": [plugin_module]}})
    try:
        acme, fake, twilio = (registry.providers[name] for name in ("acme", "fake", "twilio"))
        assert isinstance(fake, textpulse.Provider) and isinstance(twilio, textpulse.Provider)
        # acme says it does not report delivery; an unknown provider is assumed to.
        assert (registry.reports_delivery("acme"), registry.reports_delivery("fake")) == (False, True)
        assert registry.reports_delivery("gone") is True
        # Twilio names its permanent codes; the fake fails like Twilio and names the same.
        assert registry.permanent_error_codes("twilio") == {"21211", "21610", "21614", "30005", "30006"}
        assert registry.permanent_error_codes("fake") == registry.permanent_error_codes("twilio")
        assert registry.permanent_error_codes("acme") == frozenset() == registry.permanent_error_codes("gone")
        assert abilities.unsubscribed_error_codes(twilio) == {"21610"}
        assert abilities.unsubscribed_error_codes(fake) == frozenset() == abilities.unsubscribed_error_codes(None)
        # acme cannot look up sends; asking it is an empty answer, not an AttributeError.
        outgoing = [textpulse.OutgoingMessage(1, "+12025550100", "hi", "c1-all-1", "http://x/webhooks/acme/status")]
        assert (abilities.can_find_sent(acme), abilities.can_find_sent(fake)) == (False, True)
        assert abilities.find_sent(acme, outgoing) == {} == abilities.find_sent(fake, outgoing)
        assert abilities.fetch_status(acme, ["x"]) == [] and not abilities.can_fetch_status(acme)
        assert abilities.can_fetch_status(twilio) and abilities.can_fetch_status(fake)
        # An unconfigured Twilio says what is missing; acme has no check.
        assert [p.split(" is not set")[0] for p in abilities.config_problems(twilio)] == [
            "twilio: account_sid",
            "twilio: auth_token",
            "twilio: from_number or messaging_service_sid",
        ]
        assert abilities.config_problems(acme) == []
        abilities.close(acme)  # nothing to close: no error
    finally:
        registry.close()


def test_a_shortener_without_is_code_is_judged_by_the_rule_every_code_follows(
    tmp_path: Path, plugin_module: str
) -> None:
    registry = load_plugins(_settings(tmp_path), config={"plugins": {"enabled": [plugin_module]}})
    try:
        shortener = registry.shortener
        assert isinstance(shortener, WellformedCodes) and isinstance(shortener, textpulse.Shortener)
        assert shortener.new_code() == "AcmeCode1"
        assert shortener.tracked_url("AcmeCode1", "http://x") == "https://acme.example/AcmeCode1"
        assert shortener.is_code("AcmeCode1") and not shortener.is_code("short") and not shortener.is_code("a/b-c_d.e")
    finally:
        registry.close()
    builtin = load_plugins(_settings(tmp_path), config={})
    try:
        assert not isinstance(builtin.shortener, WellformedCodes)
        code = builtin.shortener.new_code()
        assert builtin.shortener.is_code(code) and builtin.shortener.is_code("x" * 32)
        assert not builtin.shortener.is_code("x" * 33) and not builtin.shortener.is_code("abc")
    finally:
        builtin.close()


def test_bot_filters_say_whether_they_need_message_times(tmp_path: Path) -> None:
    registry = load_plugins(_settings(tmp_path), config={})
    try:
        wanting = {f.name: abilities.needs_message_times(f) for f in registry.bot_filters}
        assert wanting == {
            "user_agent": False,
            "timing": True,
            "ip_range": False,
            "cloud_network": False,
            "prefetch": False,
        }
        assert all(isinstance(f, textpulse.BotFilter) for f in registry.bot_filters)
    finally:
        registry.close()


def test_listener_hooks_take_one_event_and_old_argument_names_are_refused(tmp_path: Path) -> None:
    seen: list[Any] = []

    class Listener:
        @textpulse.hookimpl
        def on_click(self, event: textpulse.ClickRecorded) -> None:
            seen.append(event)

    class OldStyle:
        @textpulse.hookimpl
        def on_click(self, click: dict[str, Any]) -> None:
            raise AssertionError("never called")

    registry = load_plugins(_settings(tmp_path), config={})
    try:
        assert not registry.listens("on_click")
        registry.pm.register(Listener())
        assert registry.listens("on_click")
        with pytest.raises(pluggy.PluginValidationError, match="click"):
            registry.pm.register(OldStyle())
        row = {
            "code": "AbCdEfGh",
            "campaign_id": 1,
            "message_id": 2,
            "link_id": 3,
            "contact_id": 4,
            "clicked_at": datetime(2025, 1, 2, tzinfo=UTC),
            "ip": "192.0.2.1",
            "user_agent": "curl/8",
            "referer": None,
            "os": "Other",
            "device": "other",
            "is_bot": True,
            "bot_score": 1.0,
            "bot_reasons": ["bot_user_agent"],
        }
        registry.pm.hook.on_click(event=payloads.click_recorded(row))
        [event] = seen
        assert isinstance(event, textpulse.ClickRecorded) and event.bot_reasons == ("bot_user_agent",)
        with pytest.raises(AttributeError):
            event.is_bot = False  # type: ignore[misc]  # frozen
    finally:
        registry.close()


def test_conversion_payload_is_built_from_the_stored_answer() -> None:
    event = payloads.conversion_recorded(
        {
            "id": 7,
            "contact_id": 4,
            "phone": "+12025550100",
            "name": "purchase",
            "revenue": 12.5,
            "occurred_at": "2025-01-02T03:04:05Z",
            "campaign_id": 1,
            "message_id": 2,
            "attribution": "direct",
        }
    )
    assert event == textpulse.ConversionRecorded(
        conversion_id=7,
        contact_id=4,
        phone="+12025550100",
        name="purchase",
        revenue=12.5,
        occurred_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        campaign_id=1,
        message_id=2,
        attribution="direct",
    )


LISTENER = """
from textpulse import hookimpl

EVENTS = []


@hookimpl
def on_message_status(event):
    EVENTS.append(event)


@hookimpl
def on_click(event):
    EVENTS.append(event)


@hookimpl
def on_reply(event):
    EVENTS.append(event)


@hookimpl
def on_conversion(event):
    EVENTS.append(event)
"""


def test_every_listener_hook_gets_its_event_from_the_running_service(
    database_url: str, temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    import httpx

    from tests.live import LiveService, wait_for

    (tmp_path / "listen_all.py").write_text(LISTENER)
    monkeypatch.syspath_prepend(str(tmp_path))
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path / "var",
        plugin_config={
            "plugins": {"enabled": ["listen_all"], "fake": {"delivery_ratio": 1.0, "callback_delay_seconds": 0.02}}
        },
    )
    live.start()
    try:
        events: list[Any] = sys.modules["listen_all"].EVENTS

        def of(kind: type) -> list[Any]:
            return [e for e in events if isinstance(e, kind)]

        phone = "+12025550177"
        live.post("/api/contacts", [{"phone": phone}])
        body = "Sale: https://shop.example/listen"
        cid = live.post("/api/campaigns", {"name": "L", "variants": [{"name": "A", "body": body}]}).json()["id"]
        assert live.post(f"/api/campaigns/{cid}/launch").status_code in (200, 202)
        wait_for(lambda: live.stats(cid)["delivered"] == 1, what="delivered")
        # The send records `sent` itself; the callbacks then move it to delivered (a `sent` changes nothing).
        [delivered] = wait_for(lambda: of(textpulse.MessageStatusChanged), what="on_message_status")
        assert (delivered.old_status, delivered.new_status) == ("sent", "delivered")
        [message] = live.messages(cid)
        assert (delivered.campaign_id, delivered.phone, delivered.provider) == (cid, phone, "fake")
        assert delivered.message_id == message["id"] and delivered.provider_message_id

        [code] = re.findall(re.escape(live.url) + r"/r/([0-9A-Za-z]+)", message["body"])
        agent = "Mozilla/5.0 (iPhone) Mobile/15E148"
        assert httpx.get(f"{live.url}/r/{code}", headers={"user-agent": agent}).status_code == 302
        [click] = wait_for(lambda: of(textpulse.ClickRecorded), what="on_click")
        assert (click.code, click.campaign_id, click.message_id, click.is_bot) == (code, cid, message["id"], False)

        assert live.post("/webhooks/fake/inbound", {"from": phone, "to": "+15550001111", "body": "STOP"}).is_success
        [reply] = of(textpulse.ReplyReceived)
        assert (reply.phone, reply.keyword, reply.action, reply.campaign_id) == (phone, "STOP", "opted_out", cid)

        assert live.post("/api/events", {"phone": phone, "name": "purchase", "revenue": 10}).status_code == 201
        [conversion] = of(textpulse.ConversionRecorded)
        assert (conversion.name, conversion.revenue, conversion.campaign_id, conversion.attribution) == (
            "purchase",
            10.0,
            cid,
            "direct",
        )
    finally:
        live.stop()
        sys.modules.pop("listen_all", None)
