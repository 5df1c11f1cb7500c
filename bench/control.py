"""How fast pause and cancel take effect, and what the check costs.

Three measurements, each printed as it is made:

1. stop latency, end to end: a live service (embedded Temporal dev server, worker, API, `fake`
   provider), a campaign pausing or cancelled mid-send; the figure is the time from the 202 to
   the last message the fake's ledger accepted (negative: nothing went after the 202), with no
   rate limit and 500-message batches (four in flight), and at 20 msg/s.
2. the state check's cost: the UPDATE that marks a provider call's messages `sending`, with the
   "campaign still running" EXISTS guard and without, CPU seconds per 1,000 calls (SQLite).
3. the alternative, activity cancellation through heartbeats: an activity heartbeating every
   10 ms under a 20 s heartbeat timeout, its workflow cancelled; the time until the activity
   sees the cancel, with the SDK's default heartbeat throttle and with a 0.5 s one.

    .venv/bin/python bench/control.py [--trials 3] [--skip-heartbeat]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from temporalio import activity, workflow  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from bench.figures import Figure, write_figures  # noqa: E402
from tests.live import LiveService, free_port, wait_for  # noqa: E402
from textpulse.devserver import DevServer  # noqa: E402


def stop_latency(temporal: str, data_dir: Path, rate: float | None, action: str) -> tuple[float, int]:
    from core.migrate import upgrade

    n = 200 if rate else 4000
    upgrade(f"sqlite:///{data_dir}/textpulse.db")
    live = LiveService(
        database_url=f"sqlite:///{data_dir}/textpulse.db",
        temporal_address=temporal,
        data_dir=data_dir,
        env={"TEXTPULSE_BATCH_SIZE": "500", "TEXTPULSE_MAX_CONCURRENT_BATCHES": "4"},
    )
    live.start()
    try:
        live.post("/api/contacts", [{"phone": f"+1202555{i:04d}"} for i in range(n)])
        body: dict[str, Any] = {"name": "B", "variants": [{"name": "A", "body": "Hi"}]}
        if rate:
            body["rate_limit_per_second"] = rate
        cid = live.post("/api/campaigns", body).json()["id"]
        live.post(f"/api/campaigns/{cid}/launch")
        wait_for(lambda: len(live.fake.ledger()) >= (10 if rate else 200), timeout=60, what="sending")
        response = live.post(f"/api/campaigns/{cid}/{action}")
        answered = datetime.now(UTC)
        assert response.status_code == 202, response.text
        time.sleep(2.0)
        accepted = [datetime.fromisoformat(entry["accepted_at"]) for entry in live.fake.ledger()]
        after = [at for at in accepted if at > answered]
        return (max(accepted) - answered).total_seconds(), len(after)
    finally:
        live.stop()


def guard_cost(data_dir: Path, calls: int = 2000) -> tuple[float, float]:
    from core.db import make_engine, session_scope
    from core.delivery.sending import _mark_sending
    from core.migrate import upgrade
    from core.models import Campaign, Contact, Message

    url = f"sqlite:///{data_dir}/guard.db"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        campaign = Campaign(name="g", provider="fake", status="running")
        session.add(campaign)
        session.flush()
        contacts = [Contact(phone=f"+1202556{i:04d}") for i in range(10)]
        session.add_all(contacts)
        session.flush()
        messages = [
            Message(
                campaign_id=campaign.id,
                contact_id=c.id,
                phone=c.phone,
                provider="fake",
                body="x",
                idempotency_key=f"g-{c.id}",
                phase="all",
            )
            for c in contacts
        ]
        session.add_all(messages)
        session.flush()
        cid = int(campaign.id or 0)
        for m in messages:
            session.refresh(m)
        rows = list(messages)
        session.expunge_all()
    results = []
    for guarded in (False, True, False, True):
        began = time.process_time()
        for _ in range(calls):
            _mark_sending(engine, rows, cid if guarded else None)
        results.append((guarded, (time.process_time() - began) / calls * 1000))
    engine.dispose()
    plain = statistics.median(cpu for guarded, cpu in results if not guarded)
    guarded_cpu = statistics.median(cpu for guarded, cpu in results if guarded)
    return plain, guarded_cpu


noticed: dict[str, float] = {}


@activity.defn(name="bench_heartbeater")
async def heartbeater(label: str) -> None:
    try:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        noticed[label] = time.monotonic()
        raise


@workflow.defn(name="BenchHeartbeat", sandboxed=False)
class BenchHeartbeat:
    @workflow.run
    async def run(self, label: str) -> None:
        await workflow.execute_activity(
            heartbeater, label, start_to_close_timeout=timedelta(minutes=5), heartbeat_timeout=timedelta(seconds=20)
        )


async def heartbeat_latency(address: str, throttle: float | None) -> float:
    client = await Client.connect(address)
    queue = f"bench-{os.getpid()}-{throttle}"
    kwargs: dict[str, Any] = {}
    if throttle is not None:
        kwargs = {
            "max_heartbeat_throttle_interval": timedelta(seconds=throttle),
            "default_heartbeat_throttle_interval": timedelta(seconds=throttle),
        }
    async with Worker(client, task_queue=queue, workflows=[BenchHeartbeat], activities=[heartbeater], **kwargs):
        label = f"{throttle}-{time.monotonic()}"
        handle = await client.start_workflow(BenchHeartbeat.run, label, id=label, task_queue=queue)
        await asyncio.sleep(3.0)
        asked = time.monotonic()
        await handle.cancel()
        while label not in noticed and time.monotonic() - asked < 60:
            await asyncio.sleep(0.01)
        return noticed.get(label, float("inf")) - asked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--skip-heartbeat", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="also write the headline figures to PATH as JSON")
    args = parser.parse_args()
    headline: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = DevServer(port=free_port(), headless=True, log_file=Path(tmp) / "temporal.log")
        server.start()
        try:
            for rate in (None, 20.0):
                for action in ("pause", "cancel"):
                    figures = []
                    for trial in range(args.trials):
                        data_dir = Path(tmp) / f"{rate}-{action}-{trial}"
                        data_dir.mkdir()
                        figures.append(stop_latency(server.address, data_dir, rate, action))
                    where = f"{rate:g} msg/s" if rate else "no rate limit, 500-message batches x4"
                    lateness = ", ".join(f"{late:+.3f}" for late, _ in figures)
                    after = ", ".join(str(count) for _, count in figures)
                    print(f"{action:6} {where}: last send - 202 = {lateness} s; messages after the 202: {after}")
                    headline.append(
                        Figure(
                            f"{action}, {where}: last send - 202 (median)",
                            statistics.median(late for late, _ in figures),
                            "s",
                            note=f"trials {lateness} s",
                        )
                    )
                    headline.append(
                        Figure(
                            f"{action}, {where}: messages accepted after the 202",
                            sum(count for _, count in figures),
                            "messages",
                            note=f"trials {after}",
                        )
                    )
            plain, guarded = guard_cost(Path(tmp))
            print(
                f"mark-sending UPDATE, CPU ms per call (SQLite, 10 messages): plain {plain:.3f}, "
                f"with the running-campaign guard {guarded:.3f} (x{guarded / plain:.2f})"
            )
            headline.append(
                Figure(
                    "mark-sending UPDATE with the running-campaign guard, CPU per call (SQLite, 10 messages)",
                    guarded,
                    "ms",
                    plain,
                    "the UPDATE without the guard",
                    plain / guarded,
                    f"x{guarded / plain:.2f} the plain UPDATE",
                )
            )
            if not args.skip_heartbeat:
                for throttle in (None, 0.5):
                    latency = asyncio.run(heartbeat_latency(server.address, throttle))
                    what = "SDK default throttle" if throttle is None else f"throttle {throttle} s"
                    print(f"heartbeat cancellation, 20 s heartbeat timeout, {what}: noticed after {latency:.2f} s")
                    headline.append(
                        Figure(f"heartbeat cancellation, 20 s heartbeat timeout, {what}: noticed after", latency, "s")
                    )
        finally:
            server.stop()
    write_figures(args.json, headline)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
