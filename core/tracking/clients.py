"""Who clicked, and with what: the client's IP (behind trusted proxies only) and its user agent.

`client_ip` runs in the redirect, once a click; `parse_user_agent` when clicks are stored, off
the redirect's hot path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    """An IP from a socket peer or a forwarded hop; some proxies add a port (`1.2.3.4:5`, `[::1]:5`)."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return ip


def _is_trusted(ip: IPAddress, trusted: Sequence[Network]) -> bool:
    return any(ip in net for net in trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """Who clicked: the socket peer, unless the peer is a trusted proxy (TEXTPULSE_TRUSTED_PROXIES).

    Then `X-Forwarded-For` is read from the right, skipping trusted proxies; the first address that
    is not trusted is the client (anything left of it could have been written by the client itself).
    A garbled hop ends the walk and the peer is kept; when every hop is trusted, the leftmost wins.
    """
    if not peer or not forwarded_for or not trusted:
        return peer
    peer_ip = _address(peer)
    if peer_ip is None or not _is_trusted(peer_ip, trusted):
        return peer
    hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
    ip: IPAddress | None = None
    for hop in reversed(hops):
        ip = _address(hop)
        if ip is None:
            return peer
        if not _is_trusted(ip, trusted):
            return str(ip)
    return str(ip) if ip is not None else peer


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
