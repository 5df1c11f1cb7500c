"""GET /health: the database and Temporal, each ok or named as down (503)."""

from __future__ import annotations

import asyncio

import anyio.to_thread
from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy import text
from sqlalchemy.engine import Engine

from api.schemas.health import Health
from api.temporal import TemporalConnection


def _ping_database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


@get(
    "/health",
    operation_id="health",
    tags=["health"],
    summary="Liveness of the service and its parts",
    responses={503: ResponseSpec(Health, description="A part is down: its field says `down: <error class>`.")},
)
async def health(engine: Engine, temporal: TemporalConnection) -> Response[Health]:
    """`{"status": "ok", "database": "ok", "temporal": "ok"}`, or 503 naming the part that is down."""
    body: Health = {"status": "ok", "database": "ok", "temporal": "ok"}
    try:
        await anyio.to_thread.run_sync(_ping_database, engine)
    except Exception as exc:
        body["database"] = f"down: {exc.__class__.__name__}"
    try:
        client = await asyncio.wait_for(temporal.get(), timeout=3)
        await asyncio.wait_for(client.service_client.check_health(), timeout=3)
    except Exception as exc:
        body["temporal"] = f"down: {exc.__class__.__name__}"
    down = [part for part, state in (("database", body["database"]), ("temporal", body["temporal"])) if state != "ok"]
    if down:
        body["status"] = "down: " + ", ".join(down)
    return Response(body, status_code=503 if down else 200)
