"""GET /health's answer."""

from typing import TypedDict


class Health(TypedDict):
    """`ok` for the service and each part, or `down: <why>` naming the part that is down (then 503)."""

    status: str
    database: str
    temporal: str
