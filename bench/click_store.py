"""Cost of storing clicks, the click writer's work, without a server around it.

    .venv/bin/python bench/click_store.py [--clicks 20000] [--codes 100000]

Seeds a temporary SQLite database the way bench/redirect.py does (`--codes` recipients, one
tracked code each, sent a minute ago), then stores `--clicks` clicks on codes drawn at random, in
batches of 150-300 (what the redirect's writer forms at ~10 000 req/s), with the built-in bot
filters on, through the writer's own path (`ClickWriter._store`: its kept connection), and prints
the CPU time per click of the storing thread.

CPU time on a shared machine is noisy. For a figure that is not, count instructions: run the
script under callgrind with `--clicks 0` and with `--clicks 5000`; the difference of the two
totals over 5 000 is the instructions per stored click (docs/benchmarks.md):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/click_store.py --clicks 0
    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/click_store.py --clicks 5000
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, write_figures  # noqa: E402
from bench.redirect import USER_AGENTS, seed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=20_000, help="clicks to store (20000; 0: setup only)")
    parser.add_argument("--codes", type=int, default=100_000, help="seeded recipients/codes (100000)")
    parser.add_argument("--json", metavar="PATH", help="also write the headline figures to PATH as JSON")
    args = parser.parse_args()

    from core.db import make_engine
    from core.hooks.contracts import BotFilter
    from core.tracking.click_writer import ClickWriter
    from core.tracking.clicks import ClickRecord
    from core.tracking.codes import recent_codes
    from plugins.botfilters import NetworkFilter, TimingFilter, UserAgentFilter

    with tempfile.TemporaryDirectory(prefix="textpulse-bench-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        seed(url, args.codes)
        engine = make_engine(url)
        targets = recent_codes(engine, datetime.now(UTC) - timedelta(hours=1), args.codes)
        draw = random.Random(7)
        filters: list[BotFilter] = [UserAgentFilter(), TimingFilter(2.0), NetworkFilter(["192.0.2.0/24"])]
        writer = ClickWriter(engine, filters=filters)

        def clicks(count: int) -> list[ClickRecord]:
            now = datetime.now(UTC)
            return [
                ClickRecord(draw.choice(targets), now, "198.51.100.7", draw.choice(USER_AGENTS[:-1]), None)
                for _ in range(count)
            ]

        writer._store(clicks(2000))  # warm-up: the connection, the statement cache, the parsers
        batches = []
        left = args.clicks
        while left > 0:
            size = min(draw.randint(150, 300), left)
            batches.append(clicks(size))
            left -= size
        started, wall = time.thread_time(), time.perf_counter()
        for batch in batches:
            writer._store(batch)
        cpu, elapsed = time.thread_time() - started, time.perf_counter() - wall
        if writer._connection is not None:
            writer._connection.close()
        engine.dispose()
    if args.clicks:
        print(
            f"stored {args.clicks} clicks in {len(batches)} batches: {cpu * 1e6 / args.clicks:.1f} µs of CPU "
            f"per click ({elapsed * 1e6 / args.clicks:.1f} µs wall)"
        )
        where = f"{args.clicks:,} clicks in {len(batches)} batches, {args.codes:,} codes"
        write_figures(
            args.json,
            [
                Figure("CPU per stored click (the storing thread)", cpu * 1e6 / args.clicks, "µs", note=where),
                Figure("wall time per stored click", elapsed * 1e6 / args.clicks, "µs"),
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
