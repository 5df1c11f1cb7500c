"""Every stats route of a campaign of a million messages and 200,000 clicks, against /health.

    .venv/bin/python bench/stats.py [--messages 1000000] [--clicks 200000] [--requests 60]
                                    [--database-url URL] [--json PATH]

In one run it
1. makes a database (SQLite in a temporary directory; with --database-url, a database of its own
   on that PostgreSQL server, dropped at the end), migrates it and seeds, straight into the tables
   (the tally triggers of migration 0013 run as they would for the real writers): `--messages`
   contacts and one launched campaign with variants A and B, one link, one message per contact
   (90 % delivered, 4 % failed with one of three error codes, 1 % undelivered, 5 % sent without a
   report, sent and delivered over three days), `--clicks` clicks on distinct messages' links
   (10 % of them bots, five operating systems), a reply and a conversion for some contacts;
   `--control-percent` (default 10) of the messages are a control group's held-out rows instead
   (never sent, touched as the batches went; 3 % of them convert within a day);
2. checks that the summary read from the tallies equals a full recount (core/stats/tallies.py), and
   the intention-to-treat numbers (migration 0020) theirs;
3. starts a Temporal dev server and the real app under uvicorn (one worker, rate limits off) and
   sends `--requests` requests to each route over one keep-alive connection, in rounds that
   alternate the routes, so a noisy machine hurts them alike; `/health` (a database ping and a
   Temporal health check) is the ceiling: each route's median latency is printed with its ratio
   to it. The target of issue 13 is every route <= 3 x /health; every route reads kept rows
   (migrations 0013-0020), and this bench says how close each one comes.
Only loopback traffic.
"""

from __future__ import annotations

import argparse
import json
import random
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

from bench.contacts import free_port, latencies, postgres_database, serve, server_env, stop  # noqa: E402
from bench.seeding import write_rows  # noqa: E402

CHUNK = 20_000
DESTINATION = "https://shop.example/a"
SYSTEMS = [
    ("iOS", "mobile"),
    ("Android", "mobile"),
    ("Windows", "desktop"),
    ("Mac OS X", "desktop"),
    ("Linux", "desktop"),
]
ERRORS = [("30003", "Unreachable destination handset"), ("30005", "Unknown destination"), ("30007", "Filtered")]


def app() -> Any:
    """The real Textpulse app (uvicorn --factory), configured from TEXTPULSE_* variables."""
    from api.app import create_app
    from core.settings import Settings

    return create_app(Settings.from_env())


def _held_out(i: int, control_percent: int) -> bool:
    """Is message `i` a held-out row of the control group? Spread evenly: for 10 %, every tenth."""
    return (i * control_percent) % 100 >= 100 - control_percent


def _message(
    i: int, campaign_id: int, variants: tuple[int, int], start: datetime, control_percent: int
) -> dict[str, Any]:
    sent = start + timedelta(seconds=(i * 259_200) // 1_000_000)  # over three days
    if _held_out(i, control_percent):  # never sent; touched when the batch beside it went
        return {
            "id": i + 1,
            "campaign_id": campaign_id,
            "contact_id": i + 1,
            "variant_id": None,
            "phase": "control",
            "phone": f"+1555{i:07d}",
            "body": "Spring sale",
            "characters": 11,
            "encoding": "GSM-7",
            "segments": 1,
            "status": "cancelled",
            "provider": "fake",
            "provider_message_id": None,
            "idempotency_key": f"bench-{campaign_id}-{i}",
            "error_code": None,
            "error_text": "held out: control group",
            "attempts": 0,
            "attempted_at": None,
            "touched_at": sent,
            "queued_at": start,
            "sent_at": None,
            "delivered_at": None,
            "failed_at": None,
            "status_changed_at": start,
            "superseded": False,
        }
    roll = i % 100
    status, delivered_at, failed_at, code, text = "delivered", sent + timedelta(seconds=5), None, None, None
    if roll >= 95:
        status, delivered_at = "sent", None
    elif roll >= 94:
        status, delivered_at, failed_at = "undelivered", None, sent + timedelta(seconds=9)
    elif roll >= 90:
        code, text = ERRORS[i % 3]
        status, delivered_at, failed_at = "failed", None, sent + timedelta(seconds=9)
    return {
        "id": i + 1,
        "campaign_id": campaign_id,
        "contact_id": i + 1,
        "variant_id": variants[i % 2],
        "phase": "all",
        "phone": f"+1555{i:07d}",
        "body": f"Spring sale https://t.example/r/c{i:07d}",
        "characters": 40,
        "encoding": "GSM-7",
        "segments": 1,
        "status": status,
        "provider": "fake",
        "provider_message_id": f"fake-{i}",
        "idempotency_key": f"bench-{campaign_id}-{i}",
        "error_code": code,
        "error_text": text,
        "attempts": 1,
        "attempted_at": sent,
        "touched_at": None,
        "queued_at": start,
        "sent_at": sent,
        "delivered_at": delivered_at,
        "failed_at": failed_at,
        "status_changed_at": delivered_at or failed_at or sent,
        "superseded": False,
    }


def seed(database_url: str, messages: int, clicks: int, control_percent: int = 0) -> tuple[int, float]:
    """(campaign id, seconds) for the campaign, its contacts, messages, clicks, replies, conversions."""
    from core.db import make_engine, session_scope
    from core.migrate import upgrade
    from core.models import Campaign, Click, Contact, Conversion, Link, Message, Reply, ShortCode, Variant

    upgrade(database_url)
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    start = now - timedelta(days=3, hours=1)
    started = time.perf_counter()
    try:
        with session_scope(engine) as session:
            held = sum(1 for i in range(messages) if _held_out(i, control_percent))
            campaign = Campaign(
                name="bench",
                status="completed",
                recipients=messages - held,
                audience={"all": True},
                control_percent=control_percent,
            )
            session.add(campaign)
            session.flush()
            assert campaign.id is not None
            a = Variant(campaign_id=campaign.id, name="A", body="Spring sale https://shop.example/a")
            b = Variant(campaign_id=campaign.id, name="B", body="Sale! https://shop.example/a")
            session.add_all([a, b])
            session.flush()
            link = Link(campaign_id=campaign.id, variant_id=a.id or 0, position=0, destination="https://shop.example/a")
            session.add(link)
            session.flush()
            campaign_id, variants, link_id = campaign.id, (a.id or 0, b.id or 0), link.id or 0
        rng = random.Random(7)
        treated = [i for i in range(messages) if not _held_out(i, control_percent)]
        clicked = sorted(rng.sample(treated, min(clicks, len(treated))))
        for first in range(0, messages, CHUNK):
            ids = range(first, min(first + CHUNK, messages))
            with engine.begin() as connection:
                write_rows(
                    connection,
                    Contact.__table__,  # type: ignore[attr-defined]
                    [
                        {"id": i + 1, "phone": f"+1555{i:07d}", "attributes": {}, "created_at": now, "updated_at": now}
                        for i in ids
                    ],
                )
                write_rows(
                    connection,
                    Message.__table__,  # type: ignore[attr-defined]
                    [_message(i, campaign_id, variants, start, control_percent) for i in ids],
                )
                write_rows(
                    connection,
                    ShortCode.__table__,  # type: ignore[attr-defined]
                    [
                        {"code": f"c{i:07d}", "message_id": i + 1, "link_id": link_id, "destination": DESTINATION}
                        for i in ids
                    ],
                )
        for first in range(0, len(clicked), CHUNK):
            rows = []
            for n, i in enumerate(clicked[first : first + CHUNK], start=first):
                system, device = SYSTEMS[n % 5]
                bot = n % 10 == 0
                rows.append(
                    {
                        "code": f"c{i:07d}",
                        "campaign_id": campaign_id,
                        "message_id": i + 1,
                        "link_id": link_id,
                        "contact_id": i + 1,
                        "clicked_at": start + timedelta(seconds=(i * 259_200) // 1_000_000 + 60 + n % 3600),
                        "ip": f"198.51.{n % 250}.{n % 200}",
                        "user_agent": "Mozilla/5.0",
                        "os": system,
                        "device": device,
                        "is_bot": bot,
                        "bot_score": 1.0 if bot else 0.0,
                        "bot_reasons": ["bot_user_agent"] if bot else [],
                    }
                )
            with engine.begin() as connection:
                write_rows(connection, Click.__table__, rows)  # type: ignore[attr-defined]
        with engine.begin() as connection:
            replied = clicked[::20]
            write_rows(
                connection,
                Reply.__table__,  # type: ignore[attr-defined]
                [
                    {
                        "contact_id": i + 1,
                        "campaign_id": campaign_id,
                        "message_id": i + 1,
                        "phone": f"+1555{i:07d}",
                        "body": "STOP" if n % 10 == 0 else "Thanks",
                        "keyword": "STOP" if n % 10 == 0 else None,
                        "provider": "fake",
                        "received_at": now,
                    }
                    for n, i in enumerate(replied)
                ],
            )
            write_rows(
                connection,
                Conversion.__table__,  # type: ignore[attr-defined]
                [
                    {
                        "contact_id": i + 1,
                        "campaign_id": campaign_id,
                        "message_id": i + 1,
                        "name": "purchase",
                        "revenue": 20.0,
                        "occurred_at": now,
                        "clicked": True,
                    }
                    for i in clicked[::10]
                ]
                + [  # 3 % of the held-out contacts buy within a day of their touch (intention to treat)
                    {
                        "contact_id": i + 1,
                        "campaign_id": campaign_id,
                        "message_id": i + 1,
                        "name": "purchase",
                        "revenue": 20.0,
                        "occurred_at": start + timedelta(seconds=(i * 259_200) // 1_000_000 + 3600),
                        "clicked": False,
                    }
                    for i in range(messages)
                    if _held_out(i, control_percent) and i % 33 == 0
                ],
            )
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                for table in ("contact", "message", "click", "short_code", "reply", "conversion"):
                    connection.exec_driver_sql(f"VACUUM ANALYZE {table}")
                for table in ("contact", "message", "click", "reply", "conversion"):
                    connection.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                    )
    finally:
        engine.dispose()
    return campaign_id, time.perf_counter() - started


def check_tallies(database_url: str, campaign_id: int) -> tuple[float, float, float]:
    """(seconds of the tally read, of summary(), of the full recount of the tally's numbers);
    asserts the tally equals the recount."""
    from core.db import make_engine, session_scope
    from core.stats import tallies
    from core.stats.summary import summary

    engine = make_engine(database_url)
    try:
        with session_scope(engine, read_only=True) as session:
            summary(session, campaign_id)  # warm
            started = time.perf_counter()
            kept = tallies.tally(session, campaign_id)
            read = time.perf_counter() - started
            started = time.perf_counter()
            summary(session, campaign_id)
            whole = time.perf_counter() - started
            started = time.perf_counter()
            counted = tallies.recount(session, campaign_id)
            slow = time.perf_counter() - started
        assert kept == counted, (kept, counted)
        return read, whole, slow
    finally:
        engine.dispose()


def check_itt(database_url: str, campaign_id: int) -> tuple[float, float]:
    """(seconds of the intention-to-treat read from migration 0020's rows, of the same counted from
    the rows); asserts they are equal (revenue to a millionth)."""
    from dataclasses import replace

    from core.db import make_engine, session_scope
    from core.stats.evidence import counted_intention_to_treat, intention_to_treat

    engine = make_engine(database_url)
    try:
        with session_scope(engine, read_only=True) as session:
            intention_to_treat(session, campaign_id)  # warm
            started = time.perf_counter()
            kept = intention_to_treat(session, campaign_id)
            read = time.perf_counter() - started
            started = time.perf_counter()
            counted = counted_intention_to_treat(session, campaign_id)
            slow = time.perf_counter() - started
        assert list(kept) == list(counted), (kept, counted)
        for name, arm in counted.items():
            assert replace(kept[name], revenue=0.0, revenue_sq=0.0) == replace(arm, revenue=0.0, revenue_sq=0.0)
            assert abs(kept[name].revenue - arm.revenue) < 1e-6, (kept[name], arm)
        return read, slow
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--clicks", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=60, help="per route")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--control-percent", type=int, default=10, help="of the messages, held-out rows of a control group"
    )
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: SQLite)")
    parser.add_argument("--json", metavar="PATH", help="also write the headline figures to PATH as JSON")
    args = parser.parse_args()

    from textpulse.devserver import DevServer

    with tempfile.TemporaryDirectory(prefix="textpulse-bench-") as tmp:
        drop = None
        if args.database_url:
            database_url, drop = postgres_database(args.database_url)
            backend = "PostgreSQL"
        else:
            database_url, backend = f"sqlite:///{tmp}/bench.db", "SQLite"
        temporal = DevServer(port=free_port(), headless=True, log_file=Path(tmp) / "temporal.log")
        server = None
        try:
            campaign_id, seconds = seed(database_url, args.messages, args.clicks, args.control_percent)
            print(f"seeded {args.messages:,} messages and {args.clicks:,} clicks in {seconds:.1f} s ({backend})")
            read, whole, slow = check_tallies(database_url, campaign_id)
            print(
                f"the tally read {read * 1000:.2f} ms (all of summary() {whole * 1000:.1f} ms: its campaign"
                f" row, and the opt-outs by unsubscribed codes from the refused rows); the full recount"
                f" {slow * 1000:.0f} ms; equal"
            )
            itt_read, itt_slow = check_itt(database_url, campaign_id)
            print(
                f"the intention-to-treat read {itt_read * 1000:.2f} ms ({args.control_percent} % held out);"
                f" counted from the rows {itt_slow * 1000:.0f} ms; equal"
            )
            temporal.start()
            port = free_port()
            env = server_env(tmp, database_url, temporal.address, port)
            server = serve(port, env, app_path="bench.stats:app")
            base = f"/api/campaigns/{campaign_id}/stats"
            routes = {
                "GET /health": "/health",
                "/stats": base,
                "/stats/variants": f"{base}/variants",
                "/stats/trend?interval=day": f"{base}/trend?interval=day",
                "/stats/links": f"{base}/links",
                "/stats/devices": f"{base}/devices",
                "/stats/click-timing": f"{base}/click-timing",
                "/stats/funnel": f"{base}/funnel",
                "/stats/errors": f"{base}/errors",
            }
            timings = latencies(port, routes, args.requests, args.rounds)
        finally:
            if server is not None:
                stop(server)
            temporal.stop()
            if drop is not None:
                drop()
    medians = {name: statistics.median(t) for name, t in timings.items()}
    health = medians["GET /health"]
    print(f"{'route':<28} {'median':>10}  ratio to /health (target <= 3)  ({args.requests} requests each, {backend})")
    for name, median in medians.items():
        print(f"{name:<28} {median * 1000:>8.2f}ms  {median / health:>8.1f}")
    if args.json:
        from bench.figures import Figure, write_figures

        figures = [
            Figure(
                f"GET {name}, median",
                medians[name] * 1000,
                "ms",
                health * 1000,
                "GET /health",
                health / medians[name],
                f"{args.messages:,} messages, {args.clicks:,} clicks, {backend}",
            )
            for name in routes
            if name != "GET /health"
        ]
        figures.append(
            Figure(
                "the tally read (summary()'s message, click, reply and conversion numbers)",
                read * 1000,
                "ms",
                note=f"a full recount of the same numbers: {slow * 1000:,.0f} ms;"
                f" all of summary(): {whole * 1000:.1f} ms",
            )
        )
        figures.append(
            Figure(
                "the intention-to-treat read (the uplifts' counts and the control arm of /stats/variants)",
                itt_read * 1000,
                "ms",
                note=f"{args.control_percent} % held out; counted from the rows: {itt_slow * 1000:,.0f} ms",
            )
        )
        write_figures(args.json, figures)
    print(json.dumps({name: round(m * 1000, 2) for name, m in medians.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
