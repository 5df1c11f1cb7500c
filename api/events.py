"""POST /api/events: conversion events from the shop, attributed to the campaign that touched last."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, post
from litestar.datastructures import State
from pydantic import BaseModel, ConfigDict, Field

from core.stats.conversions import record_conversion


class ConversionEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: str | None = None
    contact_id: int | None = None
    name: str = Field(min_length=1, max_length=100)
    revenue: float | None = Field(default=None, ge=0)
    occurred_at: datetime | None = None


class EventController(Controller):
    path = "/events"
    tags = ["events"]

    @post("/", operation_id="recordConversion", sync_to_thread=True, status_code=201)
    def record(self, state: State, data: ConversionEventIn) -> dict[str, Any]:
        """Store a conversion; `attribution` is `direct` (clicked first), `influenced`, or null."""
        registry = state.registry
        return record_conversion(
            state.engine, data.model_dump(), on_stored=lambda c: registry.pm.hook.on_conversion(conversion=c)
        )
