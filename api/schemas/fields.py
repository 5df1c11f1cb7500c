"""Field types shared by the response schemas: timestamps and the names a status can have.

The values are plain strings from the database; the annotations only tell OpenAPI their format
and, for statuses and phases, the allowed values (taken from core.statuses, so they never drift).
"""

from typing import Annotated

from litestar.params import KwargDefinition

from core.statuses import CampaignKind, CampaignStatus, MessageStatus, Phase, RunStatus
from core.tracking.segments import GSM_7, UCS_2

Timestamp = Annotated[str, KwargDefinition(format="date-time", description="UTC, ISO 8601 with a `Z`")]
OptionalTimestamp = Annotated[
    str | None, KwargDefinition(format="date-time", description="UTC, ISO 8601 with a `Z`, or null")
]
CampaignStatusName = Annotated[str, KwargDefinition(enum=[s.value for s in CampaignStatus])]
CampaignKindName = Annotated[str, KwargDefinition(enum=[k.value for k in CampaignKind])]
RunStatusName = Annotated[str, KwargDefinition(enum=[s.value for s in RunStatus])]
MessageStatusName = Annotated[str, KwargDefinition(enum=[s.value for s in MessageStatus])]
PhaseName = Annotated[str, KwargDefinition(enum=[p.value for p in Phase])]
Encoding = Annotated[str, KwargDefinition(enum=[GSM_7, UCS_2])]
