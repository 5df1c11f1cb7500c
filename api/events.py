"""POST /api/events: conversion events from the shop, attributed to the campaign that touched last."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from litestar import Controller, post
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine

from api.dependencies import Registry
from api.schemas.rows import ConversionRow
from core.campaigns.schemas import RowId
from core.hooks.payloads import conversion_recorded
from core.log import get_logger
from core.stats.conversions import record_conversion

log = get_logger("textpulse.api.events")


class ConversionEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: str | None = None
    contact_id: RowId | None = None
    name: str = Field(min_length=1, max_length=100)
    revenue: float | None = Field(default=None, ge=0)
    occurred_at: datetime | None = None


class EventController(Controller):
    path = "/events"
    tags = ["events"]

    @post("/", operation_id="recordConversion", sync_to_thread=True, status_code=201)
    def record(self, engine: Engine, registry: Registry, data: ConversionEventIn) -> ConversionRow:
        """Store a conversion; `attribution` is `direct` (clicked first), `influenced`, or null."""

        def announce(body: dict[str, Any]) -> None:
            # The conversion is stored: a failing listener is logged, never turned into an error answer.
            try:
                registry.pm.hook.on_conversion(event=conversion_recorded(body))
            except Exception:
                log.exception("on_conversion listener failed", conversion_id=body.get("id"))

        on_stored = announce if registry.listens("on_conversion") else None
        return cast(ConversionRow, record_conversion(engine, data.model_dump(), on_stored=on_stored))
