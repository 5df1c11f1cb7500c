"""Alembic migrations go up and down on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from core.db import make_engine
from core.migrate import alembic_config, downgrade, upgrade

TABLES = {
    "contact",
    "contact_attribute",
    "campaign",
    "variant",
    "link",
    "message",
    "short_code",
    "click",
    "status_event",
    "reply",
    "conversion",
    "workflow_run",
    "api_key",
    "campaign_tally",
    "campaign_clicker",
    "campaign_responder",
    "campaign_error",
    "campaign_click_key",
    "campaign_click_key_contact",
    "campaign_click_timing",
    "campaign_slot",
    "campaign_slot_contact",
    "campaign_slot_first",
    "campaign_variant_tally",
    "campaign_variant_contact",
    "campaign_variant_event",
    "campaign_variant_event_contact",
    "campaign_itt_tally",
    "campaign_itt_contact",
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


def test_0006_moves_the_control_touch_to_touched_at_and_back(empty_database_url: str) -> None:
    """0006 adds message.touched_at, moves the touch 0004 stamped on control rows (attempted_at)
    there and clears attempted_at on them; its downgrade puts it back and drops the column."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    touched = datetime(2026, 3, 2, 9, 3, tzinfo=UTC)
    attempted = datetime(2026, 3, 2, 9, 1, tzinfo=UTC)
    upgrade(empty_database_url, "0005")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO campaign (name, status, provider, audience, control_percent, tracking, recipients,"
                    " created_at) VALUES ('c', 'completed', 'fake', '{}', 50, '{}', 1, :now)"
                ),
                {"now": attempted},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO contact (phone, attributes, created_at, updated_at)"
                    " VALUES ('+1', '{}', :now, :now), ('+2', '{}', :now, :now)"
                ),
                {"now": attempted},
            )
            for contact, phase, at in ((1, "control", touched), (2, "all", attempted)):
                connection.execute(
                    sa.text(
                        "INSERT INTO message (campaign_id, contact_id, phase, phone, body, characters, encoding,"
                        " segments, status, provider, idempotency_key, attempts, attempted_at,"
                        " queued_at, status_changed_at)"
                        " VALUES (1, :contact, :phase, '+1', '', 0, 'GSM-7', 1, 'sent', 'fake', :key, 0, :at, :at, :at)"
                    ),
                    {"contact": contact, "phase": phase, "key": f"k{contact}", "at": at},
                )

        def rows() -> dict[str, tuple[Any, ...]]:
            columns = {c["name"] for c in inspect(engine).get_columns("message")}
            picked = "phase, attempted_at" + (", touched_at" if "touched_at" in columns else "")
            with engine.connect() as connection:
                found = connection.execute(sa.text(f"SELECT {picked} FROM message")).all()
            return {row[0]: tuple(_utc(v) for v in row[1:]) for row in found}

        upgrade(empty_database_url)
        assert rows() == {"control": (None, touched), "all": (attempted, None)}
        downgrade(empty_database_url, "0005")
        assert rows() == {"control": (touched,), "all": (attempted,)}
        upgrade(empty_database_url)
        assert rows() == {"control": (None, touched), "all": (attempted, None)}
    finally:
        engine.dispose()


def _utc(value: Any) -> Any:
    """A timestamp as read by raw SQL: a string on SQLite, an aware datetime on PostgreSQL."""
    from datetime import UTC, datetime

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
