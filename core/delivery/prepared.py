"""Hot statements compiled once per dialect and fed driver-ready values.

For a batch of status callbacks, SQLAlchemy's per-row parameter processing cost more than the
database's own work (docs/benchmarks.md, "Status callbacks"): core/delivery/status.py runs its
UPDATEs and the raw events' INSERT through this instead.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection


class PreparedStatement:
    """A statement compiled once per dialect (`get`, by key), run with values converted the way
    its column types convert them, each distinct value once per batch."""

    _cache: weakref.WeakKeyDictionary[Any, dict[Any, PreparedStatement]] = weakref.WeakKeyDictionary()

    def __init__(self, statement: Any, dialect: Any, column_keys: list[str] | None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = str(compiled)
        self.names = list(compiled.positiontup or []) if compiled.positional else None
        self.processors: dict[str, Any] = dict(compiled._bind_processors)
        self.constants = {k: v for k, v in compiled.params.items() if v is not None}  # values in the statement

    @classmethod
    def get(
        cls, key: Any, statement: Callable[[], Any], dialect: Any, column_keys: list[str] | None = None
    ) -> PreparedStatement:
        per_dialect = cls._cache.setdefault(dialect, {})
        if key not in per_dialect:
            per_dialect[key] = cls(statement(), dialect, column_keys)
        return per_dialect[key]

    def execute(self, conn: Connection, rows: list[dict[str, Any]]) -> Any:
        memo: dict[tuple[str, Any], Any] = {}

        def convert(name: str, value: Any) -> Any:
            processor = self.processors.get(name)
            if processor is None or value is None:
                return value
            if isinstance(value, dict):
                return processor(value)
            key = (name, value)
            if key not in memo:
                memo[key] = processor(value)
            return memo[key]

        if self.constants:
            rows = [{**self.constants, **row} for row in rows]
        if self.names is not None:
            params: list[Any] = [tuple(convert(n, row[n]) for n in self.names) for row in rows]
        else:
            params = [{n: convert(n, v) for n, v in row.items()} for row in rows]
        return conn.exec_driver_sql(self.sql, params)


def execute_many(session: Any, key: Any, build: Callable[[], Any], rows: list[dict[str, Any]]) -> None:
    """`build()`'s statement once per row of `rows` (one executemany), compiled once by `key` and
    fed driver-ready values: on the send path SQLAlchemy's per-row parameter work cost more than
    the database's. `session`: a Session or a Connection."""
    if rows:
        connection = session.connection() if hasattr(session, "connection") else session
        PreparedStatement.get(key, build, connection.dialect).execute(connection, rows)
