"""Alembic migrations go up and down on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from core.db import make_engine
from core.migrate import alembic_config, downgrade, upgrade

TABLES = {
    "contact",
    "campaign",
    "variant",
    "link",
    "message",
    "short_code",
    "click",
    "status_event",
    "reply",
    "conversion",
}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_up_down_and_up_again(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    assert _tables(empty_database_url) == TABLES
    downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) == set()
    upgrade(empty_database_url)
    assert _tables(empty_database_url) == TABLES


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_one_head() -> None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1


def test_cli_migrate_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "TEXTPULSE_DATABASE_URL": url, "TEXTPULSE_LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-m", "textpulse.cli", "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert '"event": "database migrated"' in done.stderr
    assert _tables(url) == TABLES
    bad = subprocess.run(
        [sys.executable, "-m", "textpulse.cli", "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "TEXTPULSE_HTTP_PORT": "eighty"},
    )
    assert bad.returncode == 2 and "TEXTPULSE_HTTP_PORT must be a whole number" in bad.stderr
