"""Hot statements compiled once per dialect and fed driver-ready values.

For a batch of status callbacks, SQLAlchemy's per-row parameter processing cost more than the
database's own work (docs/benchmarks.md, "Status callbacks"): core/delivery/status.py runs its
UPDATEs and the raw events' INSERT through this instead, and so does the send path
(core/delivery/sending.py's answers, core/campaigns/bodies.py's texts and short codes:
`execute_many`, `update_rows`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, insert, text, update
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
        connection = session if isinstance(session, Connection) else session.connection()
        PreparedStatement.get(key, build, connection.dialect).execute(connection, rows)


_UNNEST: dict[Any, Any] = {}


def _pg_type(table: Any, name: str, dialect: Any) -> str:
    return str(table.c[name].type.compile(dialect=dialect))


def _unnest(table: Any, keys: dict[str, str], dialect: Any) -> str:
    """`unnest(CAST(:k AS type[]), ...) AS given(k, ...)`: one array parameter per key (`keys`: key
    → the column whose type it has), so the statement's text is the same for any number of rows."""
    arrays = ", ".join(f"CAST(:{k} AS {_pg_type(table, name, dialect)}[])" for k, name in keys.items())
    return f"unnest({arrays}) AS given({', '.join(keys)})"


def _arrays(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, list[Any]]:
    return {k: [row[k] for row in rows] for k in keys}


def update_rows(
    session: Any,
    key: Any,
    table: Any,
    rows: list[dict[str, Any]],
    *,
    columns: dict[str, str],
    constants: dict[str, Any] | None = None,
    where: Callable[[], list[Any]] = list,
) -> None:
    """For each of `rows`, UPDATE `table` where its id is the row's `mid` and `where()` holds: set
    `columns` (column name → key of the row) and `constants`. PostgreSQL: one UPDATE ... FROM
    unnest(arrays) for all the rows (one statement, so one run of the statement triggers, not one
    per row, and one text whatever the number of rows, parsed and planned like any); elsewhere one
    executemany of a statement compiled once (`execute_many`). The constants are passed as
    values so that every call shares the statement."""
    if not rows:
        return
    constants = constants or {}
    connection = session if isinstance(session, Connection) else session.connection()
    given_constants = {f"k_{name}": value for name, value in constants.items()}
    if connection.dialect.name == "postgresql":
        cache_key = (connection.dialect, key, tuple(constants), tuple(columns.items()))
        if cache_key not in _UNNEST:
            dialect = connection.dialect
            keys = {"mid": "id"} | {k: name for name, k in reversed(columns.items())}
            sets = [f"{name} = given.{k}" for name, k in columns.items()]
            sets += [f"{name} = :k_{name}" for name in constants]
            conditions = [f"{table.name}.id = given.mid"]
            conditions += [str(c.compile(dialect=dialect, compile_kwargs={"literal_binds": True})) for c in where()]
            statement = text(
                f"UPDATE {table.name} SET {', '.join(sets)} FROM {_unnest(table, keys, dialect)} "
                f"WHERE {' AND '.join(conditions)}"
            ).bindparams(*(bindparam(f"k_{name}", type_=table.c[name].type) for name in constants))
            _UNNEST[cache_key] = (statement, list(keys))
        statement, keys = _UNNEST[cache_key]
        connection.execute(statement, _arrays(rows, keys) | given_constants)
        return

    def build() -> Any:
        named: dict[str, Any] = {name: bindparam(f"k_{name}") for name in constants}
        named |= {name: bindparam(k) for name, k in columns.items()}
        return update(table).where(table.c.id == bindparam("mid"), *where()).values(**named)

    rows = [row | given_constants for row in rows]
    execute_many(connection, (key, tuple(constants), tuple(columns.items())), build, rows)


def insert_rows(session: Any, key: Any, table: Any, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """INSERT `rows` (keyed by column name) into `table`: PostgreSQL one INSERT ... SELECT FROM
    unnest(arrays); elsewhere one executemany of a statement compiled once."""
    if not rows:
        return
    connection = session if isinstance(session, Connection) else session.connection()
    if connection.dialect.name == "postgresql":
        cache_key = (connection.dialect, key, columns)
        if cache_key not in _UNNEST:
            names = ", ".join(columns)
            source = _unnest(table, {name: name for name in columns}, connection.dialect)
            _UNNEST[cache_key] = (text(f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {source}"), columns)
        statement, keys = _UNNEST[cache_key]
        connection.execute(statement, _arrays(rows, list(keys)))
        return
    execute_many(connection, key, lambda: insert(table).values(**{name: bindparam(name) for name in columns}), rows)
