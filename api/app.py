"""The Litestar application: API, redirects, webhooks; `create_app()` builds it."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import structlog
from litestar import Litestar, Request
from litestar.openapi import OpenAPIConfig
from litestar.router import Router
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api import (
    automations,
    campaigns,
    clicks,
    contacts,
    dashboard,
    events,
    health,
    metrics,
    replies,
    stats,
    stats_events,
    tracked_links,
    webhooks,
)
from api.auth import api_key_guard, bind_key_name
from api.automation_service import AutomationService
from api.campaign_service import CampaignService
from api.dependencies import DEPENDENCIES
from api.errors import EXCEPTION_HANDLERS
from api.rate_limit import RateLimits
from api.redirect import RedirectApp, location_header
from api.requests import TextpulseRequest, refuse_nul_in_query
from api.schemas.openapi import DescribedTypedDicts
from api.temporal import TemporalConnection
from core.api_keys import KeyVerifier
from core.db import make_engine
from core.delivery.status_writer import StatusWriter
from core.hooks.payloads import click_recorded, status_listener
from core.hooks.registry import PluginRegistry, load_plugins
from core.log import get_logger
from core.settings import Settings
from core.tracking.click_writer import ClickWriter
from core.tracking.code_cache import CodeCache
from workflows.relay import AutomationRelay

log = get_logger("textpulse.api")

MAX_BODY = 1_000_000


async def bind_request_context(request: Request[Any, Any, Any]) -> None:
    """Every log line of a request names it: method, path, and the campaign when the path has one.

    Each request runs in a context of its own (and handlers in threads get a copy of it), so the
    binding ends with the request. Async: Litestar would run a sync hook in a worker thread, and
    what it bound would stay in that thread's copy of the context.
    """
    structlog.contextvars.clear_contextvars()
    refuse_nul_in_query(request)
    campaign_id = request.path_params.get("campaign_id")
    if campaign_id is None:
        structlog.contextvars.bind_contextvars(method=request.method, path=request.scope["path"])
    else:
        structlog.contextvars.bind_contextvars(
            method=request.method, path=request.scope["path"], campaign_id=campaign_id
        )
    bind_key_name(request)  # the API key that let it in: the guard ran first (api/auth.py)


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
    temporal = TemporalConnection(settings, temporal_client)
    # First: the writers below build hook payloads only for hooks someone listens to.
    relay = AutomationRelay.attach(
        engine, registry, temporal.get, task_queue=settings.task_queue, poll_seconds=settings.automation_poll_seconds
    )
    code_cache = CodeCache(
        engine,
        settings.redirect_cache_size,
        encode_destination=location_header,
        preload_hours=settings.redirect_preload_hours,
        refresh_seconds=settings.redirect_refresh_seconds,
    )

    plugins_listen = registry.listens("on_click")

    def on_stored(rows: list[dict[str, Any]]) -> None:
        relay.clicks_stored(rows)  # a single test while no automation listens
        if not plugins_listen:
            return
        for row in rows:  # a listener failing on one click is still told of the others
            try:
                registry.pm.hook.on_click(event=click_recorded(row))
            except Exception:
                log.exception("on_click listener failed", code=row.get("code"))

    # Payloads are built for the hook only when a plugin listens.
    click_writer = ClickWriter(
        engine,
        on_stored=on_stored,
        filters=registry.bot_filters,
        together=registry.together_filters,
    )
    redirect_app = RedirectApp(code_cache, click_writer, settings.trusted_proxies, registry.shortener.is_code)

    # The messages are read for the hook only when a plugin listens.
    plugins_notify = status_listener(engine, registry)

    def on_moved(changes: Sequence[tuple[int, str, str]]) -> None:
        relay.statuses_stored(changes)  # a single test while no automation about a contact runs
        if plugins_notify is not None:
            plugins_notify(changes)

    status_writer = StatusWriter(engine, on_moved)
    api_keys = KeyVerifier(engine, env_secret=settings.api_key, refresh_seconds=settings.api_key_refresh_seconds)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await relay.start()
        click_writer.start()
        code_cache.start()
        status_writer.start()
        await api_keys.start()
        # What exists now (modules, app, plugins) lives as long as the server: out of the collector's
        # sight, full collections under redirect load stop pausing the loop for ~100 ms (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await api_keys.close()
            await status_writer.close()
            await code_cache.close()
            await click_writer.close()
            log.info("clicks flushed", written=click_writer.written)
            await relay.close()

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
            automations.AutomationController,
        ],
        guards=[api_key_guard(api_keys)],
    )
    rate_limits = RateLimits.from_settings(settings)  # /api and /webhooks; None when both are off
    app = Litestar(
        plugins=[DescribedTypedDicts()],  # response schemas carry their docstrings
        route_handlers=[
            health.health,
            metrics.metrics,
            api_router,
            webhooks.WebhookController,
            tracked_links.follow_tracked_link,
            dashboard.dashboard_router(),
        ],
        template_config=dashboard.template_config(),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[rate_limits.middleware] if rate_limits else [],
        before_request=bind_request_context,
        request_class=TextpulseRequest,  # a body that is not JSON is a 400 (api/requests.py)
        dependencies=DEPENDENCIES,
        request_max_body_size=MAX_BODY,
        openapi_config=OpenAPIConfig(title="Textpulse", version="0.1.0", path="/schema", use_handler_docstrings=True),
        debug=False,
        logging_config=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.registry = registry
    app.state.temporal = temporal
    app.state.api_keys = api_keys  # the dashboard signs in with the same keys as /api
    app.state.campaign_service = campaign_service = CampaignService(engine, settings, registry, temporal)
    app.state.automation_service = AutomationService(engine, settings, registry, temporal, campaign_service)
    app.state.relay = relay
    app.state.click_writer = click_writer
    app.state.code_cache = code_cache
    app.state.status_writer = status_writer
    app.state.redirect_app = redirect_app  # served ahead of Litestar by api.redirect.RedirectFront
    return app
