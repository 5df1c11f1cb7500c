"""Settings come from the environment, with the defaults API.md names."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings, SettingsError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.data_dir == Path("var")
    assert s.database_url == "sqlite:///var/textpulse.db"
    assert s.embedded_temporal and s.temporal_target == "127.0.0.1:7233"
    assert (s.http_host, s.http_port, s.public_url) == ("127.0.0.1", 8000, "http://127.0.0.1:8000")
    assert s.api_key is None and s.trusted_proxies == ()
    assert s.config_path == Path("plugins.toml")
    assert s.workflow_id(7) == "campaign-7"
    assert (s.redirect_cache_size, s.redirect_preload_hours, s.redirect_refresh_seconds) == (200_000, 48, 2)


def test_overrides() -> None:
    s = Settings.from_env(
        {
            "TEXTPULSE_DATA_DIR": "/srv/tp",
            "TEXTPULSE_TEMPORAL_ADDRESS": "temporal:7233",
            "TEXTPULSE_HTTP_PORT": "9000",
            "TEXTPULSE_PUBLIC_URL": "https://t.example/",
            "TEXTPULSE_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
            "TEXTPULSE_TEMPORAL_PORT": "7300",
            "TEXTPULSE_REDIRECT_PRELOAD_HOURS": "0.5",
            "TEXTPULSE_REDIRECT_REFRESH_SECONDS": "0",
        }
    )
    assert (s.redirect_preload_hours, s.redirect_refresh_seconds) == (0.5, 0)
    assert s.database_url == "sqlite:////srv/tp/textpulse.db"
    assert not s.embedded_temporal and s.temporal_target == "temporal:7233"
    assert s.public_url == "https://t.example"
    assert s.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    "env,message",
    [
        ({"TEXTPULSE_HTTP_PORT": "x"}, "TEXTPULSE_HTTP_PORT"),
        ({"TEXTPULSE_TRUSTED_PROXIES": "10.0.0.0/33"}, "10.0.0.0/33"),
        ({"TEXTPULSE_LOG_FORMAT": "xml"}, "TEXTPULSE_LOG_FORMAT"),
        ({"TEXTPULSE_REDIRECT_REFRESH_SECONDS": "soon"}, "TEXTPULSE_REDIRECT_REFRESH_SECONDS must be a number"),
        ({"TEXTPULSE_REDIRECT_PRELOAD_HOURS": "-1"}, "TEXTPULSE_REDIRECT_PRELOAD_HOURS must be zero or more"),
        ({"TEXTPULSE_REDIRECT_CACHE_SIZE": "lots"}, "TEXTPULSE_REDIRECT_CACHE_SIZE must be a whole number"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_json_logs_when_asked() -> None:
    code = (
        "from core.log import configure_logging, get_logger\n"
        "import logging\n"
        "configure_logging('json')\n"
        "get_logger('t').info('hello', campaign_id=3)\n"
        "logging.getLogger('temporalio').warning('from stdlib')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert lines[0]["event"] == "hello" and lines[0]["campaign_id"] == 3 and lines[0]["level"] == "info"
    assert lines[1]["event"] == "from stdlib" and lines[1]["logger"] == "temporalio"
