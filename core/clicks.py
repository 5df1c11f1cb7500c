"""Clicks on tracked links: who asked (IP behind trusted proxies only), with what, and storage.

Parsing the user agent and writing rows happen off the redirect's hot path, in batches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from core.db import session_scope
from core.models import Click, Message, ShortCode

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class CodeTarget:
    """What a short code resolves to, all fixed at send time."""

    code: str
    destination: str
    message_id: int
    link_id: int
    contact_id: int
    campaign_id: int


@dataclass
class ClickRecord:
    target: CodeTarget
    clicked_at: datetime
    ip: str | None
    user_agent: str | None
    referer: str | None
    probe: bool = False  # a HEAD request: kept, counted only among raw and bot clicks
    reasons: list[str] = field(default_factory=list)


def resolve_code(engine: Engine, code: str) -> CodeTarget | None:
    with session_scope(engine) as session:
        row = session.execute(
            select(ShortCode.destination, ShortCode.message_id, ShortCode.link_id, Message.contact_id,
                   Message.campaign_id)
            .join(Message, Message.id == ShortCode.message_id)
            .where(ShortCode.code == code)
        ).first()
    if row is None:
        return None
    return CodeTarget(code, *row)


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """The peer, or, when the peer is a trusted proxy, the rightmost forwarded address not trusted."""
    if not peer or not forwarded_for or not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a forged or garbled header: believe the socket
    return hops[0] if hops else peer


@lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str | None) -> tuple[str | None, str]:
    """(OS family, device type: mobile | tablet | desktop | other)."""
    if not user_agent:
        return None, "other"
    from ua_parser import parse  # imported lazily: its tables load on first use

    result = parse(user_agent)
    os_family = result.os.family if result.os else None
    ua = user_agent.lower()
    if "ipad" in ua or "tablet" in ua or ("android" in ua and "mobile" not in ua):
        device = "tablet"
    elif "mobi" in ua or "iphone" in ua or "ipod" in ua or "windows phone" in ua:
        device = "mobile"
    elif os_family in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "FreeBSD"):
        device = "desktop"
    else:
        device = "other"
    return (None if os_family == "Other" else os_family), device


def store_clicks(engine: Engine, records: Sequence[ClickRecord]) -> list[dict[str, Any]]:
    """Insert a batch of clicks in one transaction; returns the rows written."""
    rows: list[dict[str, Any]] = []
    for record in records:
        os_family, device = parse_user_agent(record.user_agent)
        reasons = list(record.reasons)
        if record.probe and "head_request" not in reasons:
            reasons.append("head_request")
        rows.append({
            "code": record.target.code,
            "campaign_id": record.target.campaign_id,
            "message_id": record.target.message_id,
            "link_id": record.target.link_id,
            "contact_id": record.target.contact_id,
            "clicked_at": record.clicked_at,
            "ip": record.ip,
            "user_agent": record.user_agent,
            "referer": record.referer,
            "os": os_family,
            "device": device,
            "is_bot": bool(reasons),
            "bot_score": 1.0 if reasons else 0.0,
            "bot_reasons": reasons,
        })
    if rows:
        with session_scope(engine) as session:
            session.execute(insert(Click), rows)
    return rows
