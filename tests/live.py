"""The service under test, running on a thread of its own with a real socket."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from core.hooks.registry import load_plugins
from core.settings import Settings
from textpulse.up import Service

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T], *, timeout: float = 30, interval: float = 0.1, what: str = "condition") -> T:
    """Poll until `check()` is truthy; fail with what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        time.sleep(interval)
        value = check()
    return value


class LiveService:
    def __init__(
        self,
        *,
        database_url: str,
        temporal_address: str,
        data_dir: Path,
        plugin_config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        run_worker: bool = True,
    ) -> None:
        port = free_port()
        tag = secrets.token_hex(4)
        self.settings = Settings.from_env(
            {
                "TEXTPULSE_DATA_DIR": str(data_dir),
                "TEXTPULSE_DATABASE_URL": database_url,
                "TEXTPULSE_TEMPORAL_ADDRESS": temporal_address,
                "TEXTPULSE_HTTP_PORT": str(port),
                "TEXTPULSE_TASK_QUEUE": f"test-{secrets.token_hex(4)}",
                # One Temporal server serves every test: keep their workflow ids apart.
                "TEXTPULSE_WORKFLOW_ID_PREFIX": f"t{tag}-campaign-",
                "TEXTPULSE_AUTOMATION_ID_PREFIX": f"t{tag}-automation-",
                # A wait of an automation for a campaign's end looks again this often (tests: soon).
                "TEXTPULSE_AUTOMATION_POLL_SECONDS": "2",
                **(env or {}),
            }
        )
        config = plugin_config or {
            "plugins": {"fake": {"delivery_ratio": 1.0, "callback_delay_seconds": [0.01, 0.1], "seed": 7}}
        }
        # Tests click a second after the send, which the timing bot filter would call too fast
        # for a person; tests/test_bot_filters.py turns it on.
        plugins = {"botfilters": {"min_seconds": 0}, **config.get("plugins", {})}
        # Likewise one test "person" clicks two links of a text within a second, which the
        # behaviour filters call a scanner (tests/test_bot_behaviour.py tests them); off unless
        # a test configures them.
        if "disabled" not in plugins and "bot_behaviour" not in plugins:
            plugins["disabled"] = ["bot_behaviour"]
        self.plugin_config = {**config, "plugins": plugins}
        self.run_worker = run_worker
        self.url = self.settings.public_url
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.service: Service | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-service", daemon=True)

    def _run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        registry = load_plugins(self.settings, config=self.plugin_config)
        self.service = Service(self.settings, registry=registry, run_worker=self.run_worker)
        self._run(self.service.start())

    def stop(self) -> None:
        self.http.close()
        if self.service is not None:
            self._run(self.service.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def engine(self) -> Any:
        assert self.service is not None
        return self.service.engine

    @property
    def fake(self) -> Any:
        assert self.service is not None
        return self.service.registry.providers["fake"]

    # -- the API as a user calls it ---------------------------------------------------------
    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, json=json, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def stats(self, campaign_id: int) -> dict[str, Any]:
        response = self.get(f"/api/campaigns/{campaign_id}/stats")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def messages(self, campaign_id: int, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            response = self.get(
                f"/api/campaigns/{campaign_id}/messages",
                params={**params, "limit": 1000, **({"cursor": cursor} if cursor else {})},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            items += body["items"]
            cursor = body["next"]
            if not cursor:
                return items


def worker_process(live: LiveService, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """A `textpulse worker` process of its own (to SIGKILL, or to start late) on the live service's
    database, Temporal server and task queue; `env`: more TEXTPULSE_* settings (plugin settings by
    environment: the process reads no plugins.toml). Its output goes to `log`."""
    settings = live.settings
    environment = {
        **os.environ,
        "TEXTPULSE_DATA_DIR": str(settings.data_dir),
        "TEXTPULSE_DATABASE_URL": settings.database_url,
        "TEXTPULSE_TEMPORAL_ADDRESS": settings.temporal_target,
        "TEXTPULSE_TASK_QUEUE": settings.task_queue,
        "TEXTPULSE_PUBLIC_URL": live.url,
        "TEXTPULSE_CONFIG": str(settings.data_dir / "none.toml"),
        "TEXTPULSE_LOG_FORMAT": "json",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "textpulse.cli", "worker"],
        env=environment,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
