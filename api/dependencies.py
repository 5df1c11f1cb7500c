"""What route handlers are handed (Litestar `Provide`), by parameter name.

The objects live on `app.state` for the life of the app (built in `create_app`); handlers name
what they need — `engine`, `registry`, `settings`, `temporal`, `campaigns` — instead of reaching
into the state.
"""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import SkipValidation
from sqlalchemy.engine import Engine

from api.campaign_service import CampaignService
from api.temporal import TemporalConnection
from core.hooks.registry import PluginRegistry
from core.settings import Settings

# How handlers name the registry: unchecked, since an injected object needs no check and msgspec
# cannot check a PluginRegistry (its settings hold an `IPv4Network | IPv6Network` union).
Registry = SkipValidation[PluginRegistry]
# Likewise the settings (their trusted proxies are such a union) and the Temporal connection.
AppSettings = SkipValidation[Settings]
Temporal = SkipValidation[TemporalConnection]


def provide_engine(state: State) -> Engine:
    engine: Engine = state.engine
    return engine


def provide_registry(state: State) -> PluginRegistry:
    registry: PluginRegistry = state.registry
    return registry


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_temporal(state: State) -> TemporalConnection:
    temporal: TemporalConnection = state.temporal
    return temporal


def provide_campaign_service(state: State) -> CampaignService:
    service: CampaignService = state.campaign_service
    return service


DEPENDENCIES = {
    "engine": Provide(provide_engine, sync_to_thread=False),
    "registry": Provide(provide_registry, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "temporal": Provide(provide_temporal, sync_to_thread=False),
    "campaigns": Provide(provide_campaign_service, sync_to_thread=False),
}
