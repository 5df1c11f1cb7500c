"""Status callbacks ingested per second over HTTP, against a raw ASGI 204 ceiling.

Both run on the same server (uvicorn, one worker, same flags) on loopback and are loaded with
`wrk` for the same bounded time, with the same connections and a Lua script that POSTs a
different JSON delivery callback for each request (`/webhooks/fake/status`: half `sent`, half
`delivered`, over a campaign of --messages messages, so duplicates and out-of-order callbacks are
part of the load). The ceiling app reads the body and answers 204; the real one parses, stores the
raw event and moves the message's status. After the run every request wrk counted is checked to
be in `status_event`, so the figure is ingested callbacks, not answered ones.

    .venv/bin/python bench/callbacks.py [--seconds 10] [--connections 32] [--threads 1]
                                        [--messages 20000] [--database-url URL]

Needs `wrk` (apt-get install -y wrk). Prints one line per server and the ratio (target >= 0.3).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.figures import Figure, write_figures  # noqa: E402

LUA = r"""
local messages = tonumber(os.getenv("BENCH_MESSAGES"))
local statuses = {"sent", "delivered"}
local counter = 0
local offset = 0
local threads = 0

function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end

function init(args)
  offset = tonumber(wrk.thread:get("offset")) or 0
end

request = function()
  counter = counter + 1
  local n = counter + offset
  local body = string.format('{"message_id":"bench-%d","status":"%s"}', n % messages, statuses[(n % 2) + 1])
  return wrk.format("POST", "/webhooks/fake/status", {["Content-Type"] = "application/json"}, body)
end
"""


# -- the two apps uvicorn serves ----------------------------------------------------------------
async def ceiling_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The fastest thing that can answer a callback: read the body, 204."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def ingest_app() -> Any:
    """The real Textpulse app (uvicorn --factory), configured from TEXTPULSE_* variables."""
    from api.app import create_app
    from core.settings import Settings

    return create_app(Settings.from_env())


# -- the harness --------------------------------------------------------------------------------
def seed(database_url: str, messages: int) -> None:
    from sqlalchemy import insert

    from core.db import make_engine, session_scope
    from core.migrate import upgrade
    from core.models import Campaign, Contact, Message

    upgrade(database_url)
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        campaign = Campaign(name="bench", provider="fake", status="running")
        session.add(campaign)
        session.flush()
        cid = campaign.id
    for start in range(0, messages, 5000):
        ids = range(start, min(start + 5000, messages))
        with session_scope(engine) as session:
            session.execute(insert(Contact), [{"phone": f"+1555{i:07d}", "attributes": {}} for i in ids])
        with session_scope(engine) as session:
            rows = session.execute(Contact.__table__.select().where(Contact.phone.in_([f"+1555{i:07d}" for i in ids])))
            by_phone = {r.phone: r.id for r in rows}
            session.execute(
                insert(Message),
                [
                    {
                        "campaign_id": cid,
                        "contact_id": by_phone[f"+1555{i:07d}"],
                        "phone": f"+1555{i:07d}",
                        "body": "hi",
                        "status": "sending",
                        "provider": "fake",
                        "provider_message_id": f"bench-{i}",
                        "idempotency_key": f"bench-{i}",
                    }
                    for i in ids
                ],
            )
    # As autovacuum would within a minute of such a load: the planner's statistics, without which
    # PostgreSQL read every message of the provider for each batch's lookup (47 ms for a batch of
    # 32 callbacks instead of 5).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()


def count_events(database_url: str) -> int:
    from sqlalchemy import func, select

    from core.db import make_engine, session_scope
    from core.models import StatusEvent

    engine = make_engine(database_url)
    with session_scope(engine) as session:
        n = int(session.scalar(select(func.count()).select_from(StatusEvent)) or 0)
    engine.dispose()
    return n


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(target: str, port: int, env: dict[str, str], factory: bool) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--no-proxy-headers",
        "--log-level",
        "warning",
    ]
    if factory:
        command.append("--factory")
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except httpx.HTTPError:
            if process.poll() is not None:
                raise RuntimeError(f"{target} did not start") from None
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"{target} did not answer within 30 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to show cost per request beside throughput."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(port: int, script: Path, args: argparse.Namespace, env: dict[str, str]) -> tuple[float, int, int]:
    """Requests per second, requests done, and non-2xx answers."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(args.threads),
            "-c",
            str(args.connections),
            "-d",
            f"{args.seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        print(f"  wrk socket errors: {errors.group(1)}")
    return rps, done, int(bad.group(1)) if bad else 0


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per round and server")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--json", metavar="PATH", help="also write the headline figures to PATH as JSON")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="textpulse-bench-") as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/bench.db"
        seed(database_url, args.messages)
        script = Path(tmp) / "callbacks.lua"
        script.write_text(LUA)
        env = {
            **os.environ,
            "BENCH_MESSAGES": str(args.messages),
            "TEXTPULSE_DATA_DIR": tmp,
            "TEXTPULSE_DATABASE_URL": database_url,
            "TEXTPULSE_CONFIG": str(Path(tmp) / "none.toml"),
            "TEXTPULSE_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
        servers = {
            "raw ASGI 204": ("bench.callbacks:ceiling_app", False),
            "status callbacks": ("bench.callbacks:ingest_app", True),
        }
        running: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        rates: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        done_total = bad_total = 0
        try:
            for name, (target, factory) in servers.items():
                port = free_port()
                running[name] = (serve(target, port, {**env, "TEXTPULSE_HTTP_PORT": str(port)}, factory), port)
            for _ in range(args.rounds):  # alternate, so a noisy neighbour hurts both alike
                for name in servers:
                    process, port = running[name]
                    before = cpu_seconds(process.pid)
                    rps, done, bad = run_wrk(port, script, args, env)
                    rates[name].append(rps)
                    cpu[name].append((cpu_seconds(process.pid) - before) / max(done, 1) * 1e6)
                    if name == "status callbacks":
                        done_total += done
                        bad_total += bad
        finally:
            for process, _ in running.values():
                stop(process)
        stored = count_events(database_url)
        for name in servers:
            print(
                f"{name:<17} {statistics.median(rates[name]):>8.0f} req/s  (rounds: "
                f"{', '.join(f'{r:.0f}' for r in rates[name])}; server CPU "
                f"{statistics.median(cpu[name]):.0f} µs/request)"
            )
        print(f"stored {stored} status events for {done_total} answered callbacks ({bad_total} non-2xx)")
        ratio = statistics.median(rates["status callbacks"]) / statistics.median(rates["raw ASGI 204"])
        print(
            f"ratio {ratio:.3f} (target >= 0.3) — {args.connections} connections, {args.rounds} x "
            f"{args.seconds}s each, {'SQLite' if database_url.startswith('sqlite') else 'PostgreSQL'}, "
            "uvicorn 1 worker, loopback"
        )
        ceiling, real = "raw ASGI 204", "status callbacks"
        raw_cpu, real_cpu = statistics.median(cpu[ceiling]), statistics.median(cpu[real])
        write_figures(
            args.json,
            [
                Figure(
                    "status callbacks per second (median)",
                    statistics.median(rates[real]),
                    "req/s",
                    statistics.median(rates[ceiling]),
                    ceiling,
                    ratio,
                    f"{args.connections} connections",
                ),
                Figure("server CPU per callback (median)", real_cpu, "µs", raw_cpu, ceiling, raw_cpu / real_cpu),
                Figure(
                    "status events stored",
                    stored,
                    "events",
                    note=f"for {done_total:,} answered callbacks, {bad_total} non-2xx",
                ),
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
