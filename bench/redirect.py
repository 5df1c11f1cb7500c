"""Benchmark of GET /r/{code}: the real redirect against the ceiling of the same server.

    .venv/bin/python bench/redirect.py [--duration 10] [--rounds 3] [--connections 50] [--codes 100000]

In one run it
1. makes a database (SQLite in a temporary directory, or --database-url, which must be an empty
   database), migrates it and seeds one campaign with `--codes` recipients, one tracked code each
   (drawn by the built-in shortener);
2. starts, one after the other, two servers on the same software and worker count (uvicorn, one
   process, run the way `textpulse api` runs it): `raw`, a minimal ASGI app that answers 302, and
   `real`, `api.app.create_app()` over that database — the real redirect, click recorded;
3. drives each with `wrk` for `--duration` seconds, `--rounds` times, alternating raw and real so
   that a noisy machine hurts both alike. Requests walk through the seeded codes, so every request
   is another recipient's link (first clicks: cache misses; `--codes 1`: one hot link), and carry
   one of a dozen phone browser user agents. It prints req/s, p50 and p99 latency of every round,
   the medians, and the ratio of the median req/s real/raw;
4. stops each server with SIGTERM (graceful shutdown; the click queue is drained) and checks that
   every 302 the real server sent has its click row in the database.

Only loopback traffic; each load lasts `--duration` seconds. Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, write_figures  # noqa: E402
from bench.seeding import analyze, write_rows  # noqa: E402

RESULT_MARK = "BENCH-RESULT "
WRK_MARK = "BENCH-WRK "
DESTINATION = "https://shop.example/bf?utm_source=sms"
USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 "
    "Chrome/115.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0",
    "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 "
    "Safari/605.1.15",
    "WhatsApp/2.23.20.0 A",
]

# Every wrk thread walks the code list from its own offset; done() prints figures as JSON.
WRK_SCRIPT = """
local codes = {}
for line in io.lines("%(codes)s") do codes[#codes + 1] = line end
local agents = {%(agents)s}
local counter = 0
local threads = 0
function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end
function init(args)
  counter = offset or 0
end
function request()
  counter = counter + 1
  return wrk.format("GET", "/r/" .. codes[(counter %% #codes) + 1],
                    {["User-Agent"] = agents[(counter %% #agents) + 1]})
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, ' ..
    '"connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, "timeouts": %%d, "bad_status": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
end
"""


# -- the two servers (run in a subprocess: `bench/redirect.py --serve raw|real`) -------------------


class CountRedirects:
    """Counts the 302 answers a server sent, so they can be compared with the click rows."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.redirects = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 302:
                self.redirects += 1
            await send(message)

        await self.app(scope, receive, counting_send)


async def raw_app(scope: Any, receive: Any, send: Any) -> None:
    """The ceiling: what the server software does when the app does nothing but answer 302."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 302,
            "headers": [
                (b"location", DESTINATION.encode()),
                (b"cache-control", b"no-store"),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


# --cold: no codes loaded ahead of clicks, every first click reads its code from the database.
COLD = {"TEXTPULSE_REDIRECT_PRELOAD_HOURS": "0", "TEXTPULSE_REDIRECT_REFRESH_SECONDS": "0"}


def serve(kind: str, port: int, database_url: str, data_dir: str, cold: bool = False) -> None:
    """Run one server the way `textpulse api` does (textpulse/cli.py, textpulse/up.py): uvicorn's
    Server inside asyncio.run, its own signal capture off, SIGTERM asking for a graceful stop."""
    import asyncio
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    state: Any = None
    if kind == "real":
        from api.app import create_app
        from core.hooks.registry import load_plugins
        from core.settings import Settings

        settings = Settings.from_env(
            {
                # Settings in the environment apply (TEXTPULSE_REDIRECT_CACHE_SIZE=…, say).
                **{name: value for name, value in os.environ.items() if name.startswith("TEXTPULSE_")},
                "TEXTPULSE_DATA_DIR": data_dir,
                "TEXTPULSE_DATABASE_URL": database_url,
                "TEXTPULSE_HTTP_PORT": str(port),
                "TEXTPULSE_CONFIG": os.path.join(data_dir, "plugins.toml"),
                "TEXTPULSE_TEMPORAL_ADDRESS": "127.0.0.1:1",  # never contacted by /r
                **(COLD if cold else {}),
            }
        )
        from api.redirect import RedirectFront

        app = create_app(settings, registry=load_plugins(settings, config={}))
        state = app.state
        counted = CountRedirects(RedirectFront(app))
    else:
        counted = CountRedirects(raw_app)
    # The same app wrapper and server settings as textpulse/up.py.
    config = uvicorn.Config(
        counted,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = Server(config)

    async def run() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
        await server.serve()  # returns once the lifespan shutdown has drained the click queue

    asyncio.run(run())
    writer = state.click_writer if state is not None else None
    result = {
        "redirects": counted.redirects,
        "clicks_written": writer.written if writer else None,
        "batches": writer.batches if writer else None,
    }
    print(RESULT_MARK + json.dumps(result), flush=True)


# -- seeding -------------------------------------------------------------------------------------


def seed(database_url: str, count: int) -> list[str]:
    from sqlalchemy import insert

    from core.db import make_engine
    from core.migrate import upgrade
    from core.models import Campaign, Contact, Link, Message, ShortCode, Variant
    from plugins.shortener import BuiltinShortener

    upgrade(database_url)
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    shortener = BuiltinShortener()
    codes: set[str] = set()
    while len(codes) < count:
        codes.add(shortener.new_code())
    code_list = list(codes)
    with engine.begin() as conn:
        campaign_id = conn.execute(
            insert(Campaign).values(
                name="bench",
                status="completed",
                provider="fake",
                audience={"all": True},
                control_percent=0,
                tracking={"shorten_links": True},
                recipients=count,
                created_at=now,
            )
        ).inserted_primary_key[0]
        variant_id = conn.execute(
            insert(Variant).values(
                campaign_id=campaign_id,
                name="A",
                body=f"Sale: {DESTINATION}",
                weight=1,
                is_control=False,
            )
        ).inserted_primary_key[0]
        link_id = conn.execute(
            insert(Link).values(
                campaign_id=campaign_id,
                variant_id=variant_id,
                position=0,
                destination=DESTINATION,
            )
        ).inserted_primary_key[0]
        for start in range(0, count, 5000):
            chunk = range(start, min(start + 5000, count))
            write_rows(
                conn,
                Contact.__table__,
                [
                    {"id": i + 1, "phone": f"+1555{i:07d}", "attributes": {}, "created_at": now, "updated_at": now}
                    for i in chunk
                ],
            )
            write_rows(
                conn,
                Message.__table__,
                [
                    {
                        "id": i + 1,
                        "campaign_id": campaign_id,
                        "contact_id": i + 1,
                        "variant_id": variant_id,
                        "phase": "all",
                        "phone": f"+1555{i:07d}",
                        "body": f"Sale: http://127.0.0.1/r/{code_list[i]}",
                        "characters": 40,
                        "encoding": "GSM-7",
                        "segments": 1,
                        "status": "delivered",
                        "sent_at": now - timedelta(minutes=1),  # clicks come after the text
                        "delivered_at": now,
                        "provider": "fake",
                        "idempotency_key": f"bench-{i}",
                        "attempts": 1,
                        "queued_at": now,
                        "status_changed_at": now,
                    }
                    for i in chunk
                ],
            )
            write_rows(
                conn,
                ShortCode.__table__,
                [
                    {"code": code_list[i], "message_id": i + 1, "link_id": link_id, "destination": DESTINATION}
                    for i in chunk
                ],
            )
    with engine.begin() as conn:
        analyze(conn)
    engine.dispose()
    return code_list


def count_clicks(database_url: str) -> int:
    from sqlalchemy import func, select

    from core.db import make_engine
    from core.models import Click

    engine = make_engine(database_url)
    with engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(Click)).scalar_one())
    engine.dispose()
    return total


# -- driving -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited while starting:\n{process.stdout.read() if process.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the server did not listen on port {port} within {timeout}s")


def wait_for_preload(port: int, process: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until the server has loaded the codes of recently sent messages (its /metrics says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the server exited while loading codes")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            # The sample's own line: the HELP line of this family also reads "…preload_done 1 once…".
            if "\ntextpulse_redirect_preload_done 1\n" in answer.read().decode():
                return
        time.sleep(0.1)
    raise SystemExit(f"the server did not load its codes within {timeout}s")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), all its threads included, and of
    its running children (the judge of clicks together, core/tracking/together.py)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for child in _children(pid):
        total += cpu_seconds(child) or 0.0
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def wrk(args: list[str], script: Path, port: int, timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        ["wrk", *args, "-s", str(script), f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=timeout
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(WRK_MARK)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed (exit {done.returncode}): {done.stderr or done.stdout}")
    return dict(json.loads(lines[-1][len(WRK_MARK) :]))


@dataclass
class Run:
    kind: str
    wrk: dict[str, Any]
    server: dict[str, Any]
    click_rows: int | None = None  # rows this run added to the click table (real server)

    @property
    def rps(self) -> float:
        return float(self.wrk["requests"] / (self.wrk["duration_us"] / 1e6))

    @property
    def errors(self) -> int:
        w = self.wrk
        return int(w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"] + w["bad_status"])


def run_one(kind: str, args: argparse.Namespace, database_url: str, data_dir: str, script: Path) -> Run:
    port = free_port()
    before = count_clicks(database_url) if kind == "real" else 0
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--data-dir",
            data_dir,
            *(["--cold"] if args.cold else []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        wait_for_port(port, server)
        if kind == "real":
            wait_for_preload(port, server)
        wrk(["-t1", "-c4", "-d1s"], script, port, timeout=60)  # warm-up: lazy imports, first connections
        cpu_before = cpu_seconds(server.pid)
        figures = wrk(
            [f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--timeout", "10s"],
            script,
            port,
            timeout=args.duration + 60,
        )
        cpu_after = cpu_seconds(server.pid)
        if cpu_before is not None and cpu_after is not None and figures["requests"]:
            figures["cpu_us"] = (cpu_after - cpu_before) * 1e6 / figures["requests"]
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=120)
    result_lines = [line for line in output.splitlines() if line.startswith(RESULT_MARK)]
    if server.returncode != 0 or not result_lines:
        raise SystemExit(f"the {kind} server did not stop cleanly (exit {server.returncode}):\n{output}")
    run = Run(kind, figures, json.loads(result_lines[-1][len(RESULT_MARK) :]))
    if kind == "real":
        run.click_rows = count_clicks(database_url) - before
    return run


def _median(runs: list[Run], value: Any) -> float:
    return float(statistics.median(value(run) for run in runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per round and server (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each driving raw then real (3)")
    parser.add_argument("--connections", type=int, default=50, help="open connections (50)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1: leave a core to the server)")
    parser.add_argument(
        "--codes",
        type=int,
        default=100_000,
        help="seeded recipients/codes to walk through "
        "(100000: every request another recipient's link; 1: one hot link)",
    )
    parser.add_argument("--database-url", help="an empty database to use instead of a temporary SQLite file")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="turn off the loading of codes ahead of clicks: every first click reads its code from the database",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the headline figures to PATH as JSON")
    parser.add_argument("--serve", choices=["raw", "real"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.database_url, args.data_dir, args.cold)
        return 0
    if shutil.which("wrk") is None:
        print(
            "bench/redirect.py needs the load generator `wrk`, which is not installed.\n"
            "On Debian/Ubuntu: sudo apt-get install -y wrk",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="textpulse-bench-") as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/bench.db"
        started = time.monotonic()
        codes = seed(database_url, args.codes)
        codes_file = Path(tmp) / "codes.txt"
        codes_file.write_text("\n".join(codes) + "\n")
        script = Path(tmp) / "walk.lua"
        script.write_text(
            WRK_SCRIPT
            % {"codes": codes_file, "mark": WRK_MARK, "agents": ", ".join(json.dumps(agent) for agent in USER_AGENTS)}
        )
        backend = "SQLite" if database_url.startswith("sqlite") else database_url.split(":")[0]
        print(
            f"seeded {args.codes} codes in {time.monotonic() - started:.1f}s; {args.rounds} rounds of "
            f"{args.duration}s wrk -t{args.threads} -c{args.connections} per server; database {backend}; "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )
        print(
            f"{'round':<6} {'server':<6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>10} "
            f"{'errors':>7} {'302 sent':>9} {'click rows':>10}",
            flush=True,
        )
        runs: list[Run] = []
        for number in range(1, args.rounds + 1):
            for kind in ("raw", "real"):
                run = run_one(kind, args, database_url, tmp, script)
                runs.append(run)
                w = run.wrk
                rows = "" if run.click_rows is None else str(run.click_rows)
                cpu = f"{w['cpu_us']:.0f}" if "cpu_us" in w else "?"
                print(
                    f"{number:<6} {kind:<6} {run.rps:>8.0f} {w['p50_us'] / 1000:>8.2f} {w['p99_us'] / 1000:>8.2f} "
                    f"{cpu:>10} {run.errors:>7} {run.server['redirects']:>9} {rows:>10}",
                    flush=True,
                )
    raw = [run for run in runs if run.kind == "raw"]
    real = [run for run in runs if run.kind == "real"]
    for kind, group in (("raw", raw), ("real", real)):
        cpu = (
            f"{_median(group, lambda r: r.wrk['cpu_us']):>10.0f}"
            if all("cpu_us" in r.wrk for r in group)
            else f"{'?':>10}"
        )
        print(
            f"median {kind:<5} {_median(group, lambda r: r.rps):>8.0f} "
            f"{_median(group, lambda r: r.wrk['p50_us']) / 1000:>8.2f} "
            f"{_median(group, lambda r: r.wrk['p99_us']) / 1000:>8.2f} {cpu}"
        )
    ratio = _median(real, lambda r: r.rps) / _median(raw, lambda r: r.rps)
    print(f"ratio real/raw (median req/s): {ratio:.2f}  (target >= 0.5)")
    if all("cpu_us" in r.wrk for r in runs):
        cpu_ratio = _median(raw, lambda r: r.wrk["cpu_us"]) / _median(real, lambda r: r.wrk["cpu_us"])
        print(f"ratio raw/real (median server CPU per request): {cpu_ratio:.2f}")
    redirects = sum(run.server["redirects"] for run in real)
    rows = sum(run.click_rows or 0 for run in real)
    ok = all(
        run.click_rows == run.server["redirects"] == run.server["clicks_written"] and run.errors == 0 for run in real
    )
    batches = sum(run.server["batches"] for run in real)
    print(
        f"real server: {redirects} redirects sent (wrk counts only the answers it read before its time was "
        f"up), {rows} click rows written in {batches} transactions ({rows / max(batches, 1):.0f} clicks each)"
    )
    print("every redirect has its click row" if ok else "MISMATCH: a redirect without its click row, or errors")
    write_figures(args.json, headline(raw, real, ok, redirects, rows))
    return 0 if ok else 1


def headline(raw: list[Run], real: list[Run], ok: bool, redirects: int, rows: int) -> list[Figure]:
    """The medians printed above, each beside the raw server's (the ceiling) for --json."""
    ceiling = "raw ASGI 302"
    raw_rps, real_rps = _median(raw, lambda r: r.rps), _median(real, lambda r: r.rps)
    figures = [Figure("redirects per second (median)", real_rps, "req/s", raw_rps, ceiling, real_rps / raw_rps)]
    if all("cpu_us" in r.wrk for r in raw + real):
        raw_cpu, real_cpu = _median(raw, lambda r: r.wrk["cpu_us"]), _median(real, lambda r: r.wrk["cpu_us"])
        figures.append(Figure("server CPU per redirect (median)", real_cpu, "µs", raw_cpu, ceiling, raw_cpu / real_cpu))
    for name in ("p50", "p99"):
        real_ms = statistics.median(r.wrk[f"{name}_us"] for r in real) / 1000
        raw_ms = statistics.median(r.wrk[f"{name}_us"] for r in raw) / 1000
        figures.append(Figure(f"{name} latency (median)", real_ms, "ms", raw_ms, ceiling))
    note = "every redirect has its click row" if ok else "MISMATCH: a redirect without its click row, or errors"
    figures.append(Figure("click rows written", rows, "rows", note=f"{redirects:,} redirects sent; {note}"))
    return figures


if __name__ == "__main__":
    sys.exit(main())
