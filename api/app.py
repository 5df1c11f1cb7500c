"""The Litestar application: API, redirects, webhooks; `create_app()` builds it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Response, asgi
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.router import Router
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api import campaigns, clicks, contacts, dashboard, events, health, metrics, replies, stats, stats_events, webhooks
from api.redirect import ClickWriter, CodeCache, RedirectApp
from core.campaigns.definition import CampaignConflict, CampaignInvalid, CampaignNotFound
from core.campaigns.templates import BodyTemplateError
from core.db import make_engine
from core.hooks.contracts import WebhookError
from core.hooks.registry import PluginRegistry, load_plugins
from core.log import get_logger
from core.settings import Settings
from core.stats.breakdowns import ReportError
from core.stats.conversions import ConversionError

log = get_logger("textpulse.api")

MAX_BODY = 1_000_000


class TemporalConnection:
    """The Temporal client, connected on first use (the API can start before Temporal)."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.settings = settings
        self.client = client
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        if self.client is None:
            async with self._lock:
                if self.client is None:
                    self.client = await Client.connect(
                        self.settings.temporal_target, namespace=self.settings.temporal_namespace
                    )
        return self.client


def _error(status: int, detail: str, extra: Any = None) -> Response[dict[str, Any]]:
    return Response({"status_code": status, "detail": detail, "extra": extra}, status_code=status)


def _exception_handlers() -> dict[Any, Any]:
    return {
        CampaignNotFound: lambda _r, exc: _error(404, str(exc)),
        CampaignConflict: lambda _r, exc: _error(409, str(exc)),
        CampaignInvalid: lambda _r, exc: _error(422, str(exc)),
        BodyTemplateError: lambda _r, exc: _error(422, str(exc)),
        WebhookError: lambda _r, exc: _error(exc.status_code, exc.detail),
        ConversionError: lambda _r, exc: _error(422, str(exc)),
        ReportError: lambda _r, exc: _error(400, str(exc)),
    }


def _api_key_guard(api_key: str | None) -> Any:
    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if api_key and connection.headers.get("authorization", "") != f"Bearer {api_key}":
            raise NotAuthorizedException("this route needs 'Authorization: Bearer <TEXTPULSE_API_KEY>'")

    return guard


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    registry: PluginRegistry | None = None,
    temporal_client: Client | None = None,
) -> Litestar:
    settings = settings or Settings.from_env()
    engine = engine or make_engine(settings.database_url)
    registry = registry or load_plugins(settings)
    code_cache = CodeCache(
        engine,
        settings.redirect_cache_size,
        preload_hours=settings.redirect_preload_hours,
        refresh_seconds=settings.redirect_refresh_seconds,
    )

    def on_stored(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            registry.pm.hook.on_click(click=row)

    # Rows are built for the hook only when a plugin listens.
    click_writer = ClickWriter(
        engine,
        on_stored=on_stored if registry.pm.hook.on_click.get_hookimpls() else None,
        filters=registry.bot_filters,
    )
    redirect_app = RedirectApp(code_cache, click_writer, settings.trusted_proxies)

    @asgi("/r", is_mount=True, copy_scope=False, include_in_schema=False)
    async def redirect(scope: Any, receive: Any, send: Any) -> None:
        await redirect_app(scope, receive, send)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        click_writer.start()
        code_cache.start()
        # What exists now (modules, app, plugins) lives as long as the server: out of the collector's
        # sight, full collections under redirect load stop pausing the loop for ~100 ms (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await code_cache.close()
            await click_writer.close()
            log.info("clicks flushed", written=click_writer.written)

    api_router = Router(
        path="/api",
        route_handlers=[
            contacts.ContactController,
            campaigns.CampaignController,
            stats.StatsController,
            clicks.ClickController,
            events.EventController,
            stats_events.StatsEventsController,
            replies.ReplyController,
        ],
        guards=[_api_key_guard(settings.api_key)],
    )
    app = Litestar(
        route_handlers=[
            health.health,
            metrics.metrics,
            api_router,
            webhooks.WebhookController,
            redirect,
            dashboard.dashboard_router(),
        ],
        template_config=dashboard.template_config(),
        lifespan=[lifespan],
        exception_handlers=_exception_handlers(),
        request_max_body_size=MAX_BODY,
        openapi_config=OpenAPIConfig(title="Textpulse", version="0.1.0", path="/schema"),
        debug=False,
        logging_config=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.registry = registry
    app.state.temporal = TemporalConnection(settings, temporal_client)
    app.state.click_writer = click_writer
    app.state.code_cache = code_cache
    app.state.redirect_app = redirect_app  # served ahead of Litestar by api.redirect.RedirectFront
    return app
