"""The API's Temporal client, connected on first use: the API may start before Temporal does."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from core.settings import Settings


class TemporalConnection:
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
