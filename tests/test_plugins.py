"""The plugin manager: built-ins, plugins.toml, the entry-point group, settings from env."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from core.hooks import hookspecs
from core.hooks.registry import PluginError, load_plugins, read_config
from core.settings import Settings


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path), **env})


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A third-party plugin module on sys.path: a provider and a shortener."""
    (tmp_path / "acme_sms.py").write_text(
        textwrap.dedent("""
        from core.hooks.hookspecs import hookimpl
        from core.hooks.contracts import SendResult

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
        acme = registry.providers["acme"]
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
        "from core.hooks.hookspecs import hookimpl\n"
        "class P:\n    name = 'fake'\n"
        "@hookimpl\ndef register_providers(register, config):\n    register(P())\n"
    )
    with pytest.raises(PluginError, match="two plugins register a provider named 'fake'"):
        load_plugins(_settings(tmp_path), config={"plugins": {"enabled": ["dup_sms"]}})
    sys.modules.pop("dup_sms", None)


def test_every_hook_has_a_docstring() -> None:
    specs = [getattr(hookspecs, name) for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "textpulse_spec")]
    assert len(specs) >= 9
    for spec in specs:
        assert spec.__doc__ and len(spec.__doc__.strip()) > 20, spec.__name__
