"""No click is lost when the API server is stopped with SIGTERM under load.

The real `textpulse api` runs as a process of its own (against the test session's Temporal dev
server and a database seeded with tracked codes); concurrent clients open links; SIGTERM lands
mid-load. Every request answered 302 must have its click row once the process has exited (the
server finishes the requests in flight, then its lifespan shutdown drains the click queue), and
no click row may exist for a request that was not answered.

So that the drain has work to do, the database is made busy around the signal: another
connection holds the write lock of the click table from some way into the load until a second
after SIGTERM, and clicks pile up in the queue meanwhile (as they do when a database is slow).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import select, text

from core.db import READ_ONLY, make_engine, session_scope
from core.models import Campaign, Click, Contact, Link, Message, ShortCode, Variant
from plugins.shortener import BuiltinShortener
from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
DESTINATION = "https://shop.example/durable"
CODES = 200
REQUESTS = 30_000
CONCURRENCY = 48
LOCK_AFTER = 3000  # redirects answered before the click table is locked
SIGTERM_AFTER = 8000  # redirects answered before the signal
RELEASE_AFTER = 1.0  # seconds after the signal until the lock is released


def seed_codes(database_url: str) -> list[str]:
    """CODES delivered messages of one campaign, one tracked code each (all to DESTINATION)."""
    engine = make_engine(database_url)
    shortener = BuiltinShortener()
    codes = list({shortener.new_code() for _ in range(CODES * 2)})[:CODES]
    with session_scope(engine) as session:
        campaign = Campaign(name="durable", status="completed", tracking={"shorten_links": True})
        session.add(campaign)
        session.flush()
        variant = Variant(campaign_id=campaign.id, name="A", body=f"Go {DESTINATION}")
        session.add(variant)
        session.flush()
        link = Link(campaign_id=campaign.id or 0, variant_id=variant.id or 0, position=0, destination=DESTINATION)
        session.add(link)
        contacts = [Contact(phone=f"+1202555{n:04d}") for n in range(CODES)]
        session.add_all(contacts)
        session.flush()
        messages = [
            Message(
                campaign_id=campaign.id or 0,
                contact_id=c.id or 0,
                variant_id=variant.id,
                phone=c.phone,
                body=f"Go http://127.0.0.1/r/{code}",
                status="delivered",
                provider="fake",
                idempotency_key=f"durable-{c.id}",
            )
            for c, code in zip(contacts, codes, strict=True)
        ]
        session.add_all(messages)
        session.flush()
        session.add_all(
            [
                ShortCode(code=code, message_id=m.id or 0, link_id=link.id or 0, destination=DESTINATION)
                for m, code in zip(messages, codes, strict=True)
            ]
        )
    engine.dispose()
    return codes


def _start_api(database_url: str, temporal_address: str, data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TEXTPULSE_DATABASE_URL": database_url,
        "TEXTPULSE_TEMPORAL_ADDRESS": temporal_address,
        "TEXTPULSE_HTTP_PORT": str(port),
        "TEXTPULSE_DATA_DIR": str(data_dir),
        "TEXTPULSE_CONFIG": str(data_dir / "plugins.toml"),
        "TEXTPULSE_LOG_FORMAT": "json",
        "TEXTPULSE_TASK_QUEUE": f"durable-{port}",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "textpulse.cli", "api"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_until_serving(process: subprocess.Popen[str], base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"textpulse api exited: {process.stdout.read() if process.stdout else ''}"
        try:
            if httpx.get(f"{base}/r/notacode1", timeout=1).status_code == 404:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"textpulse api did not answer within {timeout}s")


class ClickTableLock:
    """Another connection holding the click table's write lock until `release()` (and a delay)."""

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        self.taken = threading.Event()
        self.released = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def take(self) -> None:
        self._thread.start()
        assert self.taken.wait(10), "could not lock the click table"

    def _hold(self) -> None:
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                conn.execute(text("SELECT 1"))  # core.db begins with BEGIN IMMEDIATE: the write lock
            else:
                conn.execute(text("LOCK TABLE click IN EXCLUSIVE MODE"))  # inserts wait, reads do not
            self.taken.set()
            self._release.wait(60)
            time.sleep(RELEASE_AFTER)
            conn.commit()
        self.released.set()

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._release.set()
        self._thread.join(70)
        self.engine.dispose()

    def clicks(self) -> int:
        with self.engine.execution_options(**{READ_ONLY: True}).connect() as conn:  # not blocked by the lock
            return int(conn.exec_driver_sql("SELECT count(*) FROM click").scalar_one())


class Connection:
    """One keep-alive HTTP/1.1 connection written by hand: a load generator in the test process
    must be cheap (httpx spends more CPU per request than the server does)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        try:
            self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: durability\r\n\r\n".encode())
            head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
            await self.reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("connection") == "close":
                self.close()
            return int(head[0].split()[1]), headers
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _load(
    port: int, codes: list[str], process: subprocess.Popen[str], lock: ClickTableLock
) -> tuple[Counter[str], Counter[str], tuple[int, int]]:
    """Open links on CONCURRENCY connections; lock the click table, then SIGTERM, mid-load.
    Returns the codes answered 302, what else happened (by kind), and (redirects answered,
    click rows stored) when the signal was sent."""
    redirected: Counter[str] = Counter()
    other: Counter[str] = Counter()
    at_signal: list[tuple[int, int]] = []
    numbers = itertools.count()

    async def client_loop() -> None:
        connection = Connection(port)
        while (number := next(numbers)) < REQUESTS:
            code = codes[number % len(codes)]
            try:
                status, headers = await connection.get(f"/r/{code}")
            except (OSError, asyncio.IncompleteReadError) as exc:
                other[type(exc).__name__] += 1
                if process.poll() is not None:
                    return  # the server is gone: nothing more will be answered
                await asyncio.sleep(0.01)
                continue
            if status != 302 or headers.get("location") != DESTINATION:
                other[f"status {status}"] += 1
                continue
            redirected[code] += 1
            answered = sum(redirected.values())
            if answered == LOCK_AFTER:
                lock.take()
            elif answered == SIGTERM_AFTER:
                at_signal.append((answered, lock.clicks()))
                process.send_signal(signal.SIGTERM)
                lock.release()
        connection.close()

    await asyncio.gather(*(client_loop() for _ in range(CONCURRENCY)))
    return redirected, other, at_signal[0]


def test_no_click_is_lost_on_sigterm_under_load(database_url: str, temporal_address: str, tmp_path: Path) -> None:
    codes = seed_codes(database_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = _start_api(database_url, temporal_address, tmp_path, port)
    lock = ClickTableLock(database_url)
    try:
        _wait_until_serving(process, base)
        redirected, other, (answered_at_signal, stored_at_signal) = asyncio.run(_load(port, codes, process, lock))
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        lock.close()
    assert process.returncode == 0, output
    assert lock.released.is_set()
    # When the signal was sent, hundreds of clicks were waiting in the queue behind the lock.
    assert answered_at_signal - stored_at_signal > (SIGTERM_AFTER - LOCK_AFTER) // 2, stored_at_signal
    answered = sum(redirected.values())
    # The signal landed mid-load: redirects before it, refused or cut requests after it.
    assert SIGTERM_AFTER <= answered < REQUESTS, (answered, other)
    assert set(other) <= {"ConnectionRefusedError", "ConnectionResetError", "IncompleteReadError"} and other, other

    engine = make_engine(database_url)
    with session_scope(engine) as session:
        clicked = Counter(session.scalars(select(Click.code)))
        contacts = {
            code: contact
            for code, contact in session.execute(
                select(ShortCode.code, Message.contact_id).join(Message, Message.id == ShortCode.message_id)
            )
        }
        attributed = {(c.code, c.contact_id) for c in session.scalars(select(Click))}
    engine.dispose()
    assert clicked == redirected  # every 302 has its click row, and no row exists without a 302
    assert attributed == {(code, contacts[code]) for code in redirected}
    flushed = [json.loads(line) for line in output.splitlines() if '"clicks flushed"' in line]
    assert [entry["written"] for entry in flushed] == [answered]
