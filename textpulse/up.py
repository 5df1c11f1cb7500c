"""One process running the API server and/or the worker (and, for `up`, the embedded Temporal
dev server), started and stopped in order: the composition root of the running service.

Used by `textpulse up|api|worker` and by the tests (which run `Service` on a thread of their own).
Stopping goes API first (it drains queued clicks), then the worker, then the plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api.app import create_app
from api.redirect import RedirectFront
from core.db import make_engine
from core.hooks.registry import PluginRegistry, load_plugins
from core.log import get_logger
from core.settings import Settings
from textpulse.devserver import DevServer
from workflows.relay import AutomationRelay
from workflows.run_sweep import RunSweeper
from workflows.worker import build_worker

log = get_logger("textpulse.up")


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
        self.relay: AutomationRelay | None = None
        self.sweeper: RunSweeper | None = None

    async def _client(self) -> Client:
        assert self.client is not None
        return self.client

    async def start(self) -> None:
        self.client = await connect_temporal(self.settings)
        if self.run_worker:
            self.relay = AutomationRelay.attach(
                self.engine,
                self.registry,
                self._client,
                task_queue=self.settings.task_queue,
                poll_seconds=self.settings.automation_poll_seconds,
            )
            await self.relay.start()
            self.sweeper = RunSweeper(
                self.engine,
                self._client,
                sorted(self.registry.automations()),
                interval=self.settings.run_sweep_seconds,
            )
            self.sweeper.start()
            self.worker, self._executor = build_worker(
                self.client, self.engine, self.registry, task_queue=self.settings.task_queue
            )
            self._tasks.append(asyncio.create_task(self.worker.run(), name="worker"))
        if self.run_api:
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
        if self.sweeper is not None:
            await self.sweeper.close()
        if self.relay is not None:
            await self.relay.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.registry.close()
        self.engine.dispose()
        log.info("textpulse stopped")


async def serve(settings: Settings, *, run_api: bool, run_worker: bool, embedded_temporal: bool) -> int:
    """Run until SIGINT or SIGTERM (or a part fails), then stop every part in order; the exit status."""

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    dev_server = None
    if embedded_temporal:
        dev_server = DevServer(
            port=settings.temporal_port,
            ui_port=settings.temporal_ui_port,
            db_file=settings.data_dir / "temporal.db",
            log_file=settings.data_dir / "temporal.log",
        )
        await asyncio.to_thread(dev_server.start)
    service = Service(settings, run_api=run_api, run_worker=run_worker)
    status = 0
    try:
        await service.start()
        if run_api:
            print(f"Textpulse is running on {settings.public_url}  (Ctrl-C stops it)", flush=True)
        waiter = asyncio.create_task(service.wait())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done and waiter.exception() is not None:
            log.error("a part of textpulse stopped", error=str(waiter.exception()))
            status = 1
        for task in (waiter, stopper):
            task.cancel()
    except Exception as exc:
        log.error("textpulse could not start", error=str(exc))
        status = 1
    finally:
        await service.stop()
        if dev_server is not None:
            await asyncio.to_thread(dev_server.stop)
    return status
