"""One process running the API server and/or the worker, started and stopped in order.

Used by `textpulse up|api|worker` and by the tests (which run it on a thread of their own).
Stopping goes API first (it drains queued clicks), then the worker, then the plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine
from temporalio.client import Client

from core.db import make_engine
from core.log import get_logger
from core.plugins import PluginRegistry, load_plugins
from core.settings import Settings

log = get_logger("textpulse.service")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def connect_temporal(settings: Settings, *, timeout: float = 60) -> Client:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await Client.connect(settings.temporal_target, namespace=settings.temporal_namespace)
        except Exception as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"cannot reach Temporal at {settings.temporal_target}: {exc}") from exc
            await asyncio.sleep(0.5)


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        run_api: bool = True,
        run_worker: bool = True,
        engine: Engine | None = None,
        registry: PluginRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.run_api = run_api
        self.run_worker = run_worker
        self.engine = engine or make_engine(settings.database_url)
        self.registry = registry or load_plugins(settings)
        self.client: Client | None = None
        self.server: _Server | None = None
        self.worker: Any = None
        self._executor: Any = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self.client = await connect_temporal(self.settings)
        if self.run_worker:
            from workflows.worker import build_worker

            self.worker, self._executor = build_worker(
                self.client, self.engine, self.registry, task_queue=self.settings.task_queue
            )
            self._tasks.append(asyncio.create_task(self.worker.run(), name="worker"))
        if self.run_api:
            from api.app import create_app
            from api.redirect import RedirectFront

            app = create_app(self.settings, engine=self.engine, registry=self.registry, temporal_client=self.client)
            config = uvicorn.Config(
                RedirectFront(app),  # /r/... ahead of Litestar: the hot path
                host=self.settings.http_host,
                port=self.settings.http_port,
                log_config=None,
                access_log=False,
                proxy_headers=False,  # TEXTPULSE_TRUSTED_PROXIES alone decides whom to believe
                lifespan="on",
                timeout_graceful_shutdown=10,
            )
            self.server = _Server(config)
            self._tasks.append(asyncio.create_task(self.server.serve(), name="api"))
            while not self.server.started:
                if self._tasks[-1].done():
                    self._tasks[-1].result()  # raises why it could not start (port taken, …)
                    raise RuntimeError("the API server stopped while starting")
                await asyncio.sleep(0.05)
        log.info(
            "textpulse running",
            api=self.settings.public_url if self.run_api else None,
            worker=self.run_worker,
            temporal=self.settings.temporal_target,
        )

    async def wait(self) -> None:
        """Until a part stops by itself (an error); re-raises what stopped it."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.worker is not None:
            with contextlib.suppress(Exception):
                await self.worker.shutdown()
        for task in self._tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.registry.close()
        self.engine.dispose()
        log.info("textpulse stopped")
