"""Rate limits on /api and /webhooks: a token bucket per client, kept in this process's memory.

A limit `N/SECONDS` (TEXTPULSE_RATE_LIMIT_API, TEXTPULSE_RATE_LIMIT_WEBHOOKS; `off`: none) lets a
client make N requests at once, and refills its bucket at N per SECONDS: `100/1` is a burst of 100
and 100 a second after it, `6000/60` a burst of 6000 and the same 100 a second. A request over the
limit is answered 429 with `Retry-After` (whole seconds, at least 1) and the app's error shape;
the route never sees it.

What is limited and what is not:
- The client is its IP as the redirect sees it (`core.tracking.clients.client_ip`: the socket
  peer, or `X-Forwarded-For` when the peer is one of TEXTPULSE_TRUSTED_PROXIES); an IPv6 client
  is its /64, the block one subscriber gets, so walking a block is one client. The bearer token
  is not part of the key: keying by it would hand a fresh bucket to every made-up token, so a
  caller guessing keys would not be slowed at all.
- /api/... and /webhooks/... only. /r/... never reaches this (`RedirectFront` serves it ahead of
  Litestar, and a path that is not /api or /webhooks is passed on untouched); neither do /health,
  /metrics, /schema and the dashboard. Paths no route matches (404) are not counted either: the
  middleware runs after Litestar's routing.
- Per API process: with N replicas behind a balancer a client gets up to N times the limit.
- At most `MAX_CLIENTS` buckets per limit; the least recently seen client is forgotten first.
  Forgetting only ever lets a client through (its bucket starts full), so a flood from many
  addresses costs bounded memory and never locks anyone out.

The cost on the webhooks' hot path is a clock read, a dict lookup and a few float operations,
about 0.6 µs of a callback's 60 (docs/benchmarks.md, "Rate limits on the webhooks"); everything
runs on the event loop, so no lock is needed.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Any

from core.settings import Settings
from core.tracking.clients import Network, client_ip

Limit = tuple[int, float]  # (requests, seconds), as parsed by core/settings.py

MAX_CLIENTS = 10_000  # buckets kept per limit (about 300 bytes each)


class TokenBuckets:
    """One token bucket per client key for one limit."""

    def __init__(self, limit: Limit, setting: str, *, max_clients: int = MAX_CLIENTS) -> None:
        count, seconds = limit
        self.capacity = float(count)
        self.rate = count / seconds  # tokens per second
        self.setting = setting
        self.text = f"{count}/{seconds:g}"
        self.max_clients = max_clients
        self.buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, when counted]

    def take(self, key: str, now: float) -> float:
        """Take a token from `key`'s bucket: 0 when there was one, else the seconds until there is."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_clients:
                self.buckets.popitem(last=False)
            self.buckets[key] = [self.capacity - 1, now]
            return 0.0
        self.buckets.move_to_end(key)
        tokens = min(self.capacity, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return 0.0
        bucket[0] = tokens
        return (1 - tokens) / self.rate

    def refusal(self, wait: float) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The 429's headers and body."""
        retry_after = max(1, math.ceil(wait))
        body = json.dumps(
            {
                "status_code": 429,
                "detail": f"too many requests: at most {self.text} (requests/seconds) from one client "
                f"({self.setting}); retry after {retry_after} s",
                "extra": {"limit": self.text, "retry_after": retry_after},
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]
        return headers, body


@lru_cache(maxsize=4096)
def _ipv6_client(ip: str) -> str:
    """An IPv6 client by its /64 (an IPv4 one mapped into IPv6 by its IPv4 address)."""
    try:
        address = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class RateLimits:
    """The limits of /api and /webhooks; `middleware` is the Litestar middleware applying them."""

    def __init__(
        self,
        api: Limit | None,
        webhooks: Limit | None,
        trusted_proxies: Sequence[Network] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.api = None if api is None else TokenBuckets(api, "TEXTPULSE_RATE_LIMIT_API", max_clients=max_clients)
        self.webhooks = (
            None
            if webhooks is None
            else TokenBuckets(webhooks, "TEXTPULSE_RATE_LIMIT_WEBHOOKS", max_clients=max_clients)
        )
        self.trusted_proxies = tuple(trusted_proxies)
        # A provider calls from a few addresses: remembering their answers saves parsing each
        # request's addresses again (about 6 µs of a callback's 60 behind a proxy).
        self._client_ip = lru_cache(maxsize=4096)(partial(client_ip, trusted=self.trusted_proxies))
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits | None:
        """The configured limits; None when both are off."""
        if settings.rate_limit_api is None and settings.rate_limit_webhooks is None:
            return None
        return cls(settings.rate_limit_api, settings.rate_limit_webhooks, settings.trusted_proxies)

    def client(self, scope: Any) -> str:
        """Whose bucket a request takes from: its client's IP (see the module's docstring)."""
        peer = scope.get("client")
        ip = peer[0] if peer else None
        if self.trusted_proxies:
            forwarded = None
            for name, value in scope["headers"]:  # several headers are one list, in order
                if name == b"x-forwarded-for":
                    text = value.decode("latin-1")
                    forwarded = text if forwarded is None else f"{forwarded},{text}"
            ip = self._client_ip(ip, forwarded)
        if not ip:
            return "-"
        return _ipv6_client(ip) if ":" in ip else ip

    def middleware(self, app: Any) -> Any:
        """Litestar middleware (called once per route; every route shares these buckets)."""

        async def rate_limited(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                path = scope["path"]
                if path.startswith("/webhooks/"):
                    buckets = self.webhooks
                elif path.startswith("/api/"):
                    buckets = self.api
                else:
                    buckets = None
                if buckets is not None:
                    wait = buckets.take(self.client(scope), self.clock())
                    if wait:
                        headers, body = buckets.refusal(wait)
                        await send({"type": "http.response.start", "status": 429, "headers": headers})
                        await send({"type": "http.response.body", "body": body})
                        return
            await app(scope, receive, send)

        return rate_limited
