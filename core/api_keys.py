"""Named API keys: create, rotate, revoke and list them, and check a presented one (README.md "API
keys").

A key's secret is `tp_` and 40 URL-safe random characters, shown once when it is made; only its
sha256 is stored, with its first 8 characters (`prefix`) to tell keys apart. Rotating a name makes
a new secret and leaves the old one valid for a grace period; revoking ends every secret of the
name at once. TEXTPULSE_API_KEY counts as one more key, named `env`.

`KeyVerifier` is what an API process asks: it holds the hashes of the live keys in memory and
reads them again every few seconds, so a change made by the CLI on the shared database reaches
every process soon, without a query per request.

It also makes and checks the dashboard's sessions (its cookie, api/dashboard.py): a key's name,
when the session ends, and an HMAC of both keyed by the sha256 of the secret that signed in. Any
process holding the live hashes can check one, and it ends with that secret (revoked, or its
rotation grace over) or after SESSION_SECONDS, whichever is first. Whoever can read the stored
hashes can therefore make a session; they could read the data itself, too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio.to_thread
from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.db import session_scope
from core.errors import Conflict, Invalid, NotFound
from core.log import get_logger
from core.models import ApiKey, utcnow

log = get_logger("textpulse.api_keys")

NAME = re.compile(r"[a-z0-9_.-]{1,64}")
ENV_NAME = "env"  # TEXTPULSE_API_KEY's name in logs; no stored key may take it
SECRET_START = "tp_"
PREFIX_LENGTH = 8
DEFAULT_GRACE_SECONDS = 3600.0  # how long a rotated-out secret still works: time to redeploy clients
TOUCH_SECONDS = 60.0  # last_used_at is written at most this often per key (and process)
SESSION_SECONDS = 30 * 24 * 3600  # how long a dashboard session lasts (at most: see above)
_SESSION_END = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class KeyInfo:
    """A live key as listed: never its secret nor its hash."""

    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None  # None: the name's current key
    last_used_at: datetime | None


def new_secret() -> str:
    return SECRET_START + secrets.token_urlsafe(30)  # 30 random bytes: 40 characters


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise Invalid(f"an API key's name is 1 to 64 of a-z, 0-9, '_', '.', '-'; got {name!r}")
    if name == ENV_NAME:
        raise Invalid(f"{ENV_NAME!r} names TEXTPULSE_API_KEY; change that variable, or choose another name")
    return name


def _live(now: datetime) -> ColumnElement[bool]:
    return and_(col(ApiKey.revoked_at).is_(None), or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > now))


def _add(session: Session, name: str, now: datetime) -> str:
    secret = new_secret()
    session.add(ApiKey(name=name, secret_hash=hash_secret(secret), prefix=secret[:PREFIX_LENGTH], created_at=now))
    return secret


def create(engine: Engine, name: str) -> str:
    """A new key named `name`; its secret, which is not kept. Conflict if the name has a live key."""
    check_name(name)
    now = utcnow()
    try:
        with session_scope(engine) as session:
            if session.exec(select(ApiKey.id).where(ApiKey.name == name, _live(now))).first() is not None:
                raise Conflict(f"an API key named {name!r} exists: rotate or revoke it")
            secret = _add(session, name, now)
    except IntegrityError:  # made at the same moment by someone else
        raise Conflict(f"an API key named {name!r} exists: rotate or revoke it") from None
    return secret


MAX_GRACE_SECONDS = 366 * 24 * 3600  # a rotated-out secret lives at most a year more


def rotate(engine: Engine, name: str, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> str:
    """A new secret for `name`; the name's older secrets stay valid `grace_seconds` more (0: none),
    or less if they were to end sooner. NotFound if the name has no live key."""
    check_name(name)
    if not (math.isfinite(grace_seconds) and 0 <= grace_seconds <= MAX_GRACE_SECONDS):
        raise Invalid(f"the grace period is 0 to {MAX_GRACE_SECONDS} seconds (a year); got {grace_seconds!r}")
    now = utcnow()
    ends = now + timedelta(seconds=grace_seconds)
    try:
        with session_scope(engine) as session:
            old = session.exec(select(ApiKey).where(ApiKey.name == name, _live(now))).all()
            if not old:
                raise NotFound(f"no API key named {name!r}")
            for row in old:
                row.expires_at = ends if row.expires_at is None else min(row.expires_at, ends)
                session.add(row)
            session.flush()  # the current row stops being current before its successor is added
            secret = _add(session, name, now)
    except IntegrityError:  # rotated at the same moment by someone else
        raise Conflict(f"the API key {name!r} was rotated meanwhile; list the keys and try again") from None
    return secret


def revoke(engine: Engine, name: str) -> int:
    """End every live secret of `name` now; how many. NotFound if it has none."""
    check_name(name)
    now = utcnow()
    with session_scope(engine) as session:
        live = session.exec(select(ApiKey).where(ApiKey.name == name, _live(now))).all()
        if not live:
            raise NotFound(f"no API key named {name!r}")
        for row in live:
            row.revoked_at = now
            session.add(row)
    return len(live)


def list_keys(engine: Engine) -> list[KeyInfo]:
    """The live keys by name, each name's oldest first (a current key after the ones it replaces)."""
    with session_scope(engine, read_only=True) as session:
        rows = session.exec(
            select(ApiKey).where(_live(utcnow())).order_by(col(ApiKey.name), col(ApiKey.created_at), col(ApiKey.id))
        ).all()
    return [KeyInfo(r.name, r.prefix, r.created_at, r.expires_at, r.last_used_at) for r in rows]


def _session_mac(digest: bytes, name: str, ends: int) -> str:
    return hmac.new(digest, f"textpulse dashboard\0{name}\0{ends}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Known:
    name: str
    digest: bytes  # the hex sha256 of the secret
    key_id: int | None  # None: TEXTPULSE_API_KEY
    expires_at: datetime | None
    last_used_at: datetime | None


class KeyVerifier:
    """Which key a presented secret is, from the live keys read at most `refresh_seconds` ago.

    `start()` reads them and keeps reading them (each time writing the `last_used_at` of the keys
    used since, where a minute has passed); `verify()` and the dashboard's sessions never touch
    the database. Until the first read succeeds, `loaded` is False and only TEXTPULSE_API_KEY is
    known.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        env_secret: str | None,
        refresh_seconds: float = 5,
        touch_seconds: float = TOUCH_SECONDS,
    ) -> None:
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self.touch_seconds = touch_seconds
        self._env = (_Known(ENV_NAME, hash_secret(env_secret).encode(), None, None, None),) if env_secret else ()
        self._known: tuple[_Known, ...] = self._env
        self.loaded = False
        self._used: dict[int, datetime] = {}  # key id -> when, to write at the next read
        self._touched: dict[int, datetime] = {}  # key id -> the last use this process wrote down
        self._used_lock = threading.Lock()  # verify() runs on the loop, reload() in a thread
        self._reload_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def required(self) -> bool:
        """Whether /api needs a key: TEXTPULSE_API_KEY is set, a stored key was live at the last
        read, or the keys could not be read yet (so a database error never opens the API)."""
        return bool(self._known) or not self.loaded

    def verify(self, secret: str) -> str | None:
        """The name of the live key whose secret this is, or None.

        The sha256 of `secret` is compared with every known hash, each with `hmac.compare_digest`
        and without stopping at a match, so the time taken says neither which key matched nor
        whether one did.
        """
        found = self._match(secret)
        return None if found is None else found.name

    def start_session(self, secret: str, *, seconds: int = SESSION_SECONDS) -> str | None:
        """A dashboard session for the live key whose secret this is (checked as by `verify`),
        `<name>.<end, unix seconds>.<hex HMAC>`, lasting `seconds` at most; None for no such key."""
        found = self._match(secret)
        if found is None:
            return None
        ends = int(utcnow().timestamp()) + seconds
        return f"{found.name}.{ends}.{_session_mac(found.digest, found.name, ends)}"

    def verify_session(self, session: str) -> str | None:
        """The name of the key a session from `start_session` is of, while it and the secret that
        made it are live; else None. The HMAC is compared, with `hmac.compare_digest` and without
        stopping at a match, with that of every live secret of the name (a rotated name has two)."""
        parts = session.rsplit(".", 2)
        if len(parts) != 3 or not _SESSION_END.fullmatch(parts[1]):
            return None
        name, ends, offered = parts[0], int(parts[1]), parts[2].encode()
        now = utcnow()
        if ends <= now.timestamp():
            return None
        found: _Known | None = None
        for known in self._known:
            if known.name == name:
                expected = _session_mac(known.digest, name, ends).encode()
                if hmac.compare_digest(offered, expected) and found is None:
                    found = known
        if found is None or not self._still_live(found, now):
            return None
        return found.name

    def _match(self, secret: str) -> _Known | None:
        digest = hash_secret(secret).encode()
        found: _Known | None = None
        for known in self._known:
            if hmac.compare_digest(digest, known.digest) and found is None:
                found = known
        if found is None or not self._still_live(found, utcnow()):
            return None
        return found

    def _still_live(self, found: _Known, now: datetime) -> bool:
        """Whether the grace of a key matched just now has not ended since the last read; notes its
        use for `last_used_at` if so."""
        if found.expires_at is not None and now >= found.expires_at:
            return False
        if found.key_id is not None:
            self._touch(found, now)
        return True

    def _touch(self, found: _Known, now: datetime) -> None:
        assert found.key_id is not None
        seen = [at for at in (found.last_used_at, self._touched.get(found.key_id)) if at is not None]
        if seen and (now - max(seen)).total_seconds() < self.touch_seconds:
            return
        self._touched[found.key_id] = now
        with self._used_lock:
            self._used[found.key_id] = now

    def reload(self) -> None:
        """Write the pending `last_used_at`s, then read the live keys (blocking: a thread's work)."""
        with self._reload_lock:
            with self._used_lock:
                used, self._used = self._used, {}
            try:
                with session_scope(self.engine, read_only=not used) as session:
                    for key_id, at in used.items():  # never moved back by a process that lags
                        session.execute(
                            update(ApiKey)
                            .where(
                                col(ApiKey.id) == key_id,
                                or_(col(ApiKey.last_used_at).is_(None), col(ApiKey.last_used_at) < at),
                            )
                            .values(last_used_at=at)
                        )
                    rows = session.exec(select(ApiKey).where(_live(utcnow()))).all()
            except BaseException:
                with self._used_lock:
                    for key_id, at in used.items():
                        self._used[key_id] = max(at, self._used.get(key_id, at))
                raise
            stored = tuple(_Known(r.name, r.secret_hash.encode(), r.id, r.expires_at, r.last_used_at) for r in rows)
            was_required = self.loaded and self.required
            self._known = self._env + stored
            self.loaded = True
        if was_required and not self.required:  # the last key was revoked or expired
            log.warning("no API key is live and TEXTPULSE_API_KEY is unset: /api is open to anyone")

    async def _reload(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.reload)
        except Exception as exc:  # the last keys read stay in force; the next round tries again
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]  # not the SQL that follows
            log.warning("API keys not read", error=first_line, loaded=self.loaded)

    async def start(self) -> None:
        """Read the keys now, then every `refresh_seconds` until `close()`."""
        await self._reload()
        stored = len(self._known) - len(self._env)
        log.info("API keys read", stored=stored, env=bool(self._env), loaded=self.loaded, required=self.required)
        self._task = asyncio.get_running_loop().create_task(self._keep_up(), name="api-key-refresh")

    async def _keep_up(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self._reload()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._used:  # the uses not written yet
            await self._reload()
