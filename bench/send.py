"""Snapshot and send at scale: a campaign of N recipients launched on a live service, to `fake`.

A Temporal dev server, `textpulse api` and `textpulse worker` as processes of their own (the shape of
`make run` split in two, so each one's CPU is read from /proc), N contacts seeded straight into the
database, one campaign with a personalised body and a tracked link (a short code per message),
launched through the API. Printed:

- launch to the first message handed to the provider (the tally's `sent` > 0), and to the last;
- send throughput: messages / (last - first) seconds;
- CPU seconds per 1,000 messages from the launch to the end, of the worker (snapshot, rendering,
  sending, recording: all of it), the API and the Temporal dev server, and the worker's with the
  API's (what Textpulse costs; the Temporal server's is Temporal's, shown beside it); on
  PostgreSQL also every server process's (SQLite's work is in the worker's already);
- the workflow's history events (every run of its continue-as-new chain), and per 1M messages.

The fake provider posts no callbacks here (`TEXTPULSE_FAKE_CALLBACKS=false`): this measures the send
path; bench/callbacks.py measures callbacks. Every message is checked sent once at the end.

    .venv/bin/python bench/send.py [--recipients 100000] [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.contacts import free_port, postgres_database, seed, server_env, stop  # noqa: E402
from bench.figures import Figure, write_figures  # noqa: E402
from textpulse.devserver import DevServer  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
BODY = (
    "{{ attributes.city }} sale today, {{ attributes.tier }} members first: "
    "https://shop.example/sale?tier={{ attributes.tier }}"
)


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and of its descendants (live or waited for), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    family, grown = {pid}, True
    while grown:
        more = {child for child, parent in parents.items() if parent in family} - family
        family |= more
        grown = bool(more)
    total = 0
    for member in family:
        try:
            total += sum(int(v) for v in _stat(member)[11:15])  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            continue
    return total / TICKS


def postgres_cpu_seconds() -> float:
    """CPU seconds of every PostgreSQL server process on the machine (the server is shared: read it
    beside the others, on a quiet machine)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                total += sum(int(v) for v in _stat(int(entry.name))[11:15])
        except (OSError, IndexError, ValueError):
            continue
    return total / TICKS


def start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "textpulse.cli", command],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def request(port: int, method: str, path: str, body: Any = None) -> Any:
    import httpx

    response = httpx.request(method, f"http://127.0.0.1:{port}{path}", json=body, timeout=60)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return response.json()


def wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not answer /health within 90 s")


async def history_events(address: str, workflow_id: str) -> tuple[int, int]:
    """(events, runs) of every run of the workflow's continue-as-new chain."""
    from temporalio.client import Client

    client = await Client.connect(address)
    events = runs = 0
    async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        async for _event in handle.fetch_history_events():
            events += 1
        runs += 1
    return events, runs


def run(args: argparse.Namespace, tmp: Path, database_url: str) -> list[Figure]:
    from sqlalchemy import func, select
    from sqlmodel import Session, col

    from core.db import make_engine
    from core.models import Message
    from core.stats.tallies import tally

    n = args.recipients
    seeded = seed(database_url, n, n // 5)
    print(f"seeded {n:,} contacts in {seeded:.1f} s", flush=True)
    temporal = DevServer(port=free_port(), headless=True, log_file=tmp / "temporal.log")
    temporal.start()
    port = free_port()
    env = {
        **server_env(str(tmp), database_url, temporal.address, port),
        "TEXTPULSE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "TEXTPULSE_FAKE_CALLBACKS": "false",
        "TEXTPULSE_FAKE_DELIVERY_RATIO": "1",
        **({"TEXTPULSE_BATCH_SIZE": str(args.batch_size)} if args.batch_size else {}),
    }
    api = start("api", env, tmp / "api.log")
    worker = start("worker", env, tmp / "worker.log")
    engine = make_engine(database_url)
    try:
        wait_healthy(port, api, tmp / "api.log")
        time.sleep(2)  # the worker polls its queue
        campaign = request(
            port, "POST", "/api/campaigns", {"name": "send bench", "variants": [{"name": "A", "body": BODY}]}
        )
        cid = campaign["id"]
        processes = {"worker": worker.pid, "api": api.pid, "temporal": temporal.process.pid}  # type: ignore[union-attr]
        postgres = database_url.startswith("postgresql")
        before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        pg_before = postgres_cpu_seconds() if postgres else 0.0
        launched = time.monotonic()
        request(port, "POST", f"/api/campaigns/{cid}/launch")
        first = last = None
        deadline = launched + args.timeout
        with Session(engine) as session:
            while time.monotonic() < deadline:
                sent = tally(session, cid).sent
                session.rollback()
                now = time.monotonic()
                if sent and first is None:
                    first = now
                    print(f"first message handed over {first - launched:.1f} s after the launch", flush=True)
                if sent >= n:
                    last = now
                    break
                time.sleep(0.1)
        after = {name: cpu_seconds(pid) for name, pid in processes.items()}
        if postgres:
            before["postgres"], after["postgres"] = pg_before, postgres_cpu_seconds()
        if first is None or last is None:
            raise RuntimeError(f"not all sent within {args.timeout} s: {sent:,} of {n:,}")
        with Session(engine) as session:
            stored = session.execute(
                select(func.count(), func.count(func.distinct(col(Message.contact_id)))).where(
                    col(Message.campaign_id) == cid, col(Message.status) == "sent"
                )
            ).one()
        ledger = sum(1 for _ in (tmp / "fake_ledger.jsonl").open())
        assert stored[0] == stored[1] == n == ledger, (stored, n, ledger)
        time.sleep(1)
        events, runs = asyncio.run(history_events(temporal.address, f"campaign-{cid}"))
    finally:
        engine.dispose()
        for process in (worker, api):
            stop(process)
        temporal.stop()
    cpu = {name: after[name] - before[name] for name in after}
    rate = n / (last - first) if last > first else float("inf")
    per_1k = {name: seconds / n * 1000 for name, seconds in cpu.items()}
    ours = per_1k["worker"] + per_1k["api"]
    print(
        f"{n:,} messages: first after {first - launched:.1f} s, last after {last - launched:.1f} s; "
        f"send {rate:,.0f} msg/s (first to last)"
    )
    print(
        "CPU s per 1,000 messages, launch to end: "
        + ", ".join(f"{name} {value:.3f}" for name, value in per_1k.items())
        + f"; worker + API {ours:.3f}"
    )
    print(f"workflow history: {events:,} events in {runs} runs; {events / n * 1_000_000:,.0f} per 1M messages")
    backend = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    where = f"{n:,} recipients, {backend}"
    return [
        Figure(f"launch to first message handed over ({where})", first - launched, "s"),
        Figure(f"send throughput, first to last message ({where})", rate, "msg/s"),
        Figure(f"CPU per 1,000 messages, snapshot + send, worker + API ({where})", ours, "CPU s"),
        Figure(f"CPU per 1,000 messages, Temporal dev server ({where})", per_1k["temporal"], "CPU s"),
        *(
            [Figure(f"CPU per 1,000 messages, PostgreSQL server processes ({where})", per_1k["postgres"], "CPU s")]
            if "postgres" in per_1k
            else []
        ),
        Figure(f"workflow history events per 1M messages ({where})", events / n * 1_000_000, "events"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="messages per send activity (the settings' default)"
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--database-url", help="a PostgreSQL server URL: a database of its own is made on it")
    parser.add_argument("--json", metavar="PATH", help="also write the headline figures to PATH as JSON")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="textpulse-send-"))
    drop = None
    try:
        if args.database_url:
            database_url, drop = postgres_database(args.database_url)
        else:
            database_url = f"sqlite:///{tmp}/textpulse.db"
        figures = run(args, tmp, database_url)
    finally:
        if drop is not None:
            drop()
        shutil.rmtree(tmp, ignore_errors=True)
    write_figures(args.json, figures)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    os._exit(status)
