"""GET /health: the database and Temporal, each ok or named as down (503)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio.to_thread
from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import text


def _ping_database(engine: Any) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


@get("/health", operation_id="health", tags=["health"], summary="Liveness of the service and its parts")
async def health(state: State) -> Response[dict[str, str]]:
    """`{"status": "ok", "database": "ok", "temporal": "ok"}`, or 503 naming the part that is down."""
    body = {"status": "ok", "database": "ok", "temporal": "ok"}
    try:
        await anyio.to_thread.run_sync(_ping_database, state.engine)
    except Exception as exc:
        body["database"] = f"down: {exc.__class__.__name__}"
    try:
        client = await asyncio.wait_for(state.temporal.get(), timeout=3)
        await asyncio.wait_for(client.service_client.check_health(), timeout=3)
    except Exception as exc:
        body["temporal"] = f"down: {exc.__class__.__name__}"
    down = [part for part in ("database", "temporal") if body[part] != "ok"]
    if down:
        body["status"] = "down: " + ", ".join(down)
    return Response(body, status_code=503 if down else 200)
