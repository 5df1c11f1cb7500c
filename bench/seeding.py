"""Seeding helpers shared by the bench/ scripts."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert


def write_rows(connection: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` into `table`: on PostgreSQL by one COPY (its statement-level triggers run
    once for the lot; an executemany is one statement, and one run of every trigger, per row),
    columns the rows leave out taking their defaults as an INSERT would."""
    if connection.dialect.name != "postgresql":
        connection.execute(insert(table), rows)
        return
    given = set(rows[0])
    columns = [c for c in table.columns if c.name in given or (c.default is not None and not c.primary_key)]

    def value(column: Any, row: dict[str, Any]) -> Any:
        if column.name in row:
            v = row[column.name]
        else:
            v = column.default.arg(None) if column.default.is_callable else column.default.arg
        return json.dumps(v) if isinstance(v, (dict, list)) else v

    names = ", ".join(c.name for c in columns)
    with connection.connection.cursor() as cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([value(c, row) for c in columns])


def analyze(connection: Any) -> None:
    """PostgreSQL: the planner's statistics for the tables just seeded, as autovacuum would make
    them within a minute of such a load (without them a lookup may read the whole table)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ANALYZE")
