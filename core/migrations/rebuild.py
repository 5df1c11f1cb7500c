"""SQLite table rebuilds inside a migration (batch mode), with foreign keys off meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import op


@contextmanager
def rebuilding_tables() -> Iterator[None]:
    """SQLite cannot alter a column: batch mode copies the table into a new one and drops the old
    one, which foreign keys forbid while other tables point at its rows (short codes, clicks). So,
    as SQLite's own procedure for rebuilding a table says: foreign keys off (only possible between
    transactions: the one the migrations run in is committed and a new one begun), rebuild, check
    that every reference still holds, commit, foreign keys on again. PostgreSQL alters in place."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    driver = bind.connection.driver_connection
    assert driver is not None
    driver.execute("COMMIT")
    driver.execute("PRAGMA foreign_keys = OFF")
    driver.execute("BEGIN IMMEDIATE")
    try:
        yield
        broken = driver.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"foreign keys broken by the rebuild: {broken[:10]}")
        driver.execute("COMMIT")
    except BaseException:
        driver.execute("ROLLBACK")
        raise
    finally:
        driver.execute("PRAGMA foreign_keys = ON")
        driver.execute("BEGIN IMMEDIATE")  # what the migration's own transaction goes on in
