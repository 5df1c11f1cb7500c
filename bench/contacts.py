"""Attribute filters at a million contacts: GET /api/contacts?attribute.city=London against /health,
and an attribute audience read as a campaign's snapshot reads it.

    .venv/bin/python bench/contacts.py [--contacts 1000000] [--audience 100000] [--requests 300]
                                       [--database-url URL] [--json PATH]

In one run it
1. makes a database (SQLite in a temporary directory; with --database-url, a database of its own
   `textpulse_bench_contacts_<random>` on that PostgreSQL server, dropped at the end), migrates it
   and seeds `--contacts` contacts straight into `contact` and `contact_attribute` (multi-row
   inserts on SQLite, COPY on PostgreSQL, then VACUUM ANALYZE there as autovacuum would): 5 cities
   (London a fifth), a `tier` spread so that {"city": "London", "tier": ["gold", "silver"]} holds
   exactly `--audience` contacts, evenly over the id range;
2. reads that audience with `iter_audience` (ids off the index, then the contacts by id), twice,
   building the (id, attributes) list `snapshot` builds, and prints the plan of the London page's
   query (EXPLAIN ANALYZE on PostgreSQL, EXPLAIN QUERY PLAN on SQLite);
3. starts a Temporal dev server and the real app under uvicorn (one worker, the API's rate limit
   off), then sends `--requests` requests to each route below over one keep-alive connection, in
   rounds that alternate the routes, so a noisy machine hurts them alike; `/health` (a database
   ping and a Temporal health check) is the ceiling, and each list route's median latency is
   printed with its ratio to it (target: the London page <= 5 x /health).
Only loopback traffic.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CITIES = ["London", "Paris", "Berlin", "Madrid", "Rome"]
AUDIENCE = {"city": "London", "tier": ["gold", "silver"]}
SEED_CHUNK = 20_000


def app() -> Any:
    """The real Textpulse app (uvicorn --factory), configured from TEXTPULSE_* variables."""
    from api.app import create_app
    from core.settings import Settings

    return create_app(Settings.from_env())


# -- the data ------------------------------------------------------------------------------------
def attributes_of(i: int, contacts: int, audience: int) -> dict[str, str]:
    """Contact i (0-based): London every fifth; among the London ones, `audience` evenly spread
    are gold or silver, the rest bronze; elsewhere the tiers take turns."""
    city = CITIES[i % 5]
    if city != "London":
        return {"city": city, "tier": ("gold", "silver", "bronze")[(i // 5) % 3]}
    london, j = (contacts + 4) // 5, i // 5
    chosen = (j * audience) // london != ((j + 1) * audience) // london
    return {"city": city, "tier": ("gold" if j % 2 else "silver") if chosen else "bronze"}


def seed(database_url: str, contacts: int, audience: int) -> float:
    """Seconds to put `contacts` contacts and their attribute rows in both tables."""
    from sqlalchemy import insert

    from core.contacts.attributes import attribute_rows, write_attribute_rows
    from core.db import make_engine
    from core.migrate import upgrade
    from core.models import Contact

    upgrade(database_url)
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    started = time.perf_counter()
    try:
        if engine.dialect.name == "postgresql":
            raw = engine.raw_connection()
            try:
                conn: Any = raw.driver_connection
                with conn.cursor() as cursor:
                    with cursor.copy("COPY contact (id, phone, attributes, created_at, updated_at) FROM STDIN") as copy:
                        for i in range(contacts):
                            attrs = json.dumps(attributes_of(i, contacts, audience))
                            copy.write_row((i + 1, f"+1555{i:07d}", attrs, now, now))
                    with cursor.copy('COPY contact_attribute (contact_id, "key", value) FROM STDIN') as copy:
                        for i in range(contacts):
                            for row in attribute_rows(i + 1, attributes_of(i, contacts, audience)):
                                copy.write_row(row)
                    cursor.execute("SELECT setval(pg_get_serial_sequence('contact', 'id'), %s)", (contacts,))
                conn.commit()
                conn.autocommit = True
                with conn.cursor() as cursor:
                    cursor.execute("VACUUM ANALYZE contact")
                    cursor.execute("VACUUM ANALYZE contact_attribute")
                conn.autocommit = False
            finally:
                raw.close()
        else:
            for start in range(0, contacts, SEED_CHUNK):
                ids = range(start, min(start + SEED_CHUNK, contacts))
                people = {i + 1: attributes_of(i, contacts, audience) for i in ids}
                with engine.begin() as connection:
                    connection.execute(
                        insert(Contact.__table__),  # type: ignore[attr-defined]
                        [
                            {
                                "id": cid,
                                "phone": f"+1555{cid - 1:07d}",
                                "attributes": attrs,
                                "created_at": now,
                                "updated_at": now,
                            }
                            for cid, attrs in people.items()
                        ],
                    )
                    write_attribute_rows(
                        connection, [row for cid, attrs in people.items() for row in attribute_rows(cid, attrs)]
                    )
    finally:
        engine.dispose()
    return time.perf_counter() - started


def read_audience(database_url: str) -> tuple[int, float, float]:
    """(contacts, seconds for the whole audience as (id, attributes), seconds for the ids alone)."""
    from core.campaigns.definition import iter_audience
    from core.contacts.filters import matching_contacts
    from core.db import make_engine, session_scope
    from core.models import Campaign

    engine = make_engine(database_url)
    try:
        with session_scope(engine, read_only=True) as session:
            started = time.perf_counter()
            ids = list(session.scalars(matching_contacts(AUDIENCE)))
            ids_seconds = time.perf_counter() - started
        with session_scope(engine, read_only=True) as session:
            started = time.perf_counter()
            campaign = Campaign(name="bench", audience={"attributes": AUDIENCE})
            audience = [(c.id or 0, dict(c.attributes or {})) for c in iter_audience(session, campaign)]
            seconds = time.perf_counter() - started
        assert len(audience) == len(ids), (len(audience), len(ids))
        return len(audience), seconds, ids_seconds
    finally:
        engine.dispose()


def list_plan(database_url: str, after: int) -> list[str]:
    """The plan of the London page's query from `after` (PostgreSQL: EXPLAIN ANALYZE)."""
    from api.contacts import list_query
    from core.db import make_engine

    query, id_column, also = list_query({"city": "London"})
    statement = query.where(id_column > after, *(c > after for c in also)).order_by(id_column).limit(101)
    engine = make_engine(database_url)
    try:
        sql = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                return [row[0] for row in connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")]
            return [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
    finally:
        engine.dispose()


# -- the server ------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(data_dir: str, database_url: str, temporal_address: str, port: int) -> dict[str, str]:
    """The environment of the app under bench: its own data directory, database and Temporal, no
    plugins.toml, JSON logs, no rate limit on /api, no preloading of short codes."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TEXTPULSE_DATA_DIR": data_dir,
        "TEXTPULSE_DATABASE_URL": database_url,
        "TEXTPULSE_TEMPORAL_ADDRESS": temporal_address,
        "TEXTPULSE_CONFIG": str(Path(data_dir) / "none.toml"),
        "TEXTPULSE_LOG_FORMAT": "json",
        "TEXTPULSE_RATE_LIMIT_API": "off",
        "TEXTPULSE_REDIRECT_PRELOAD_HOURS": "0",
        "TEXTPULSE_HTTP_PORT": str(port),
    }


def serve(port: int, env: dict[str, str], app_path: str = "bench.contacts:app") -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", app_path, "--factory", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(http.client.HTTPConnection("127.0.0.1", port, timeout=5), "/health")[0] == 200:
                return process
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError("the app did not start")
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the app did not answer /health with 200 within 60 s")


def get(connection: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


def latencies(port: int, routes: dict[str, str], requests: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per request of each route, `requests` each, in `rounds` alternating rounds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for path in routes.values():  # warm: connection, caches, the first query plans
        for _ in range(10):
            status, body = get(connection, path)
            assert status == 200, (path, status, body[:300])
    timings: dict[str, list[float]] = {name: [] for name in routes}
    per_round = max(1, requests // rounds)
    for _ in range(rounds):
        for name, path in routes.items():
            for _ in range(per_round):
                started = time.perf_counter()
                status, _body = get(connection, path)
                timings[name].append(time.perf_counter() - started)
                assert status == 200, (path, status)
    connection.close()
    return timings


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- the database of its own on PostgreSQL ----------------------------------------------------------
def postgres_database(server_url: str) -> tuple[str, Any]:
    """A new database on the server of `server_url` (whose database is used to create it): its URL
    and a function that drops it."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"textpulse_bench_contacts_{secrets.token_hex(4)}"

    def admin() -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database or "postgres",
            autocommit=True,
        )

    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url.set(database=name).render_as_string(hide_password=False), drop


# -- the run ----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--audience", type=int, default=100_000, help="contacts the audience filter matches")
    parser.add_argument("--requests", type=int, default=300, help="per route")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: SQLite)")
    parser.add_argument("--json", metavar="PATH", help="also write the headline figures to PATH as JSON")
    args = parser.parse_args()
    if args.audience > (args.contacts + 4) // 5:
        parser.error("--audience can be at most a fifth of --contacts (the London contacts)")

    from api.paging import encode_cursor
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
            seconds = seed(database_url, args.contacts, args.audience)
            print(
                f"seeded {args.contacts:,} contacts, {2 * args.contacts:,} attribute rows "
                f"in {seconds:.1f} s ({backend})"
            )
            reads = [read_audience(database_url) for _ in range(2)]
            size = reads[0][0]
            print(
                f"audience {json.dumps(AUDIENCE)}: {size:,} contacts read in "
                f"{', '.join(f'{r[1]:.2f}' for r in reads)} s (their ids off the index: "
                f"{', '.join(f'{r[2]:.2f}' for r in reads)} s)"
            )
            print("plan of the London page from the middle:", *list_plan(database_url, args.contacts // 2), sep="\n  ")
            temporal.start()
            port = free_port()
            env = server_env(tmp, database_url, temporal.address, port)
            server = serve(port, env)
            london = {"attribute.city": "London", "limit": "100"}
            routes = {
                "GET /health": "/health",
                "GET /api/contacts?limit=100 (no filter)": "/api/contacts?limit=100",
                "?attribute.city=London&limit=100": f"/api/contacts?{urlencode(london)}",
                "  the same, from the middle (cursor)": "/api/contacts?"
                + urlencode({**london, "cursor": encode_cursor(args.contacts // 2)}),
                "?attribute.city=London&attribute.tier=gold": "/api/contacts?"
                + urlencode({**london, "attribute.tier": "gold"}),
                "?attribute.city=Atlantis (nobody)": "/api/contacts?attribute.city=Atlantis&limit=100",
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
    print(f"{'route':<46} {'median':>9} {'p90':>9}  ratio to /health  ({args.requests} requests each)")
    for name, values in timings.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:<46} {medians[name] * 1000:>7.2f}ms {p90 * 1000:>7.2f}ms  {medians[name] / health:>6.2f}")
    ratio = medians["?attribute.city=London&limit=100"] / health
    best = min(r[1] for r in reads)
    print(
        f"ratio {ratio:.2f} (target <= 5): the London page against /health, {args.contacts:,} contacts, {backend}, "
        f"uvicorn 1 worker, loopback; audience of {size:,} in {best:.2f} s (target <= 10 s)"
    )
    if args.json:
        from bench.figures import Figure, write_figures

        london_ms, health_ms = medians["?attribute.city=London&limit=100"] * 1000, health * 1000
        write_figures(
            args.json,
            [
                Figure(
                    "GET /api/contacts?attribute.city=London&limit=100, median",
                    london_ms,
                    "ms",
                    health_ms,
                    "GET /health",
                    health_ms / london_ms,
                    f"{args.contacts:,} contacts, {backend}",
                ),
                Figure(
                    "attribute audience read (iter_audience)", best, "s", note=f"{size:,} contacts of {args.contacts:,}"
                ),
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
