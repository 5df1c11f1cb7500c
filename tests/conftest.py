"""Real parts for the tests: a Temporal dev server, SQLite and PostgreSQL databases, and the
whole service (API + worker) listening on a real socket.

PostgreSQL runs whenever TEXTPULSE_TEST_POSTGRES_URL is set (CI sets it): each session makes
its own database `textpulse_test_<random>` on that server and drops it afterwards.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from core.migrate import upgrade
from tests.live import LiveService, free_port
from textpulse.devserver import DevServer

POSTGRES_URL = os.environ.get("TEXTPULSE_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"] if POSTGRES_URL else ["sqlite"]

_exit_status = 0


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Iterator[None]:
    global _exit_status
    yield
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # temporalio can abort the interpreter at exit (sdk-python#300): leave with the real status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


@pytest.fixture(scope="session")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = DevServer(port=free_port(), headless=True, log_file=tmp_path_factory.mktemp("temporal") / "temporal.log")
    server.start()
    yield server.address
    server.stop()


class PostgresDatabases:
    """Creates and drops databases named textpulse_test_<random> on the shared server."""

    def __init__(self, url: str) -> None:
        self.admin_url = make_url(url)
        self.created: list[str] = []

    def _admin(self):  # type: ignore[no-untyped-def]
        import psycopg

        u = self.admin_url
        return psycopg.connect(
            host=u.host,
            port=u.port or 5432,
            user=u.username,
            password=u.password,
            dbname=u.database or "postgres",
            autocommit=True,
        )

    def create(self) -> str:
        name = f"textpulse_test_{secrets.token_hex(6)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self._admin() as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases | None]:
    if not POSTGRES_URL:
        yield None
        return
    databases = PostgresDatabases(POSTGRES_URL)
    yield databases
    databases.drop_all()


@pytest.fixture(params=BACKENDS)
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_databases: PostgresDatabases | None
) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "postgres":
        assert postgres_databases is not None
        return postgres_databases.create()
    return f"sqlite:///{tmp_path / 'textpulse.db'}"


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """A fresh database on each backend, migrated to the newest schema."""
    upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture(params=["postgres"] if POSTGRES_URL else [])
def postgres_database_url(request: pytest.FixtureRequest, postgres_databases: PostgresDatabases | None) -> str:
    """A fresh PostgreSQL database, migrated, for what only PostgreSQL has (row and table locks
    between writers): such a test runs whenever TEXTPULSE_TEST_POSTGRES_URL is set, as CI sets it."""
    assert postgres_databases is not None
    url = postgres_databases.create()
    upgrade(url)
    return url


@pytest.fixture
def scaled_database_url(tmp_path: Path, postgres_databases: PostgresDatabases | None) -> str:
    """One database for the long tests of the scaled-out shape: PostgreSQL when the tests have
    it (several processes writing at once is what it is for), else SQLite. Migrated."""
    url = postgres_databases.create() if postgres_databases is not None else f"sqlite:///{tmp_path / 'textpulse.db'}"
    upgrade(url)
    return url


@pytest.fixture
def live(database_url: str, temporal_address: str, tmp_path: Path) -> Iterator[LiveService]:
    """The whole service (API + worker) on a free port, its fake provider fast and seeded."""
    service = LiveService(database_url=database_url, temporal_address=temporal_address, data_dir=tmp_path / "var")
    service.start()
    yield service
    service.stop()
