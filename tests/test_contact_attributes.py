"""contact_attribute: attributes as text rows that every write keeps in step, and the filters of
audiences and of GET /api/contacts answered from its index (core/contacts/filters.py)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from api.app import create_app
from core.campaigns.definition import iter_audience
from core.contacts.attributes import KEY_LIMIT, VALUE_LIMIT, attribute_key, attribute_text
from core.contacts.filters import attributes_match
from core.contacts.importing import upsert_contacts
from core.db import make_engine, session_scope
from core.delivery.replies import ReplyTexts, handle_inbound
from core.hooks.contracts import InboundMessage
from core.hooks.registry import load_plugins
from core.migrate import upgrade
from core.models import Campaign, Contact, ContactAttribute
from core.settings import Settings

TABLE = ContactAttribute.__table__  # type: ignore[attr-defined]


def reference_text(value: Any) -> str | None:
    """The text form, written out again for the values these tests use (the reference)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value
    return json.dumps(_whole(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    return value


def reference_match(attributes: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for key, value in wanted.items():
        choices = {reference_text(v) for v in (value if isinstance(value, list) else [value])}
        if reference_text(attributes.get(key)) not in choices:
            return False
    return True


def stored_rows(engine: Engine) -> dict[int, dict[str, str]]:
    with engine.connect() as connection:
        found: dict[int, dict[str, str]] = {}
        for contact_id, key, value in connection.execute(select(TABLE.c.contact_id, TABLE.c.key, TABLE.c.value)):
            found.setdefault(contact_id, {})[key] = value
    return found


def assert_in_step(engine: Engine) -> dict[int, dict[str, Any]]:
    """contact_attribute holds exactly the texts of every contact's attributes; returns them."""
    with session_scope(engine, read_only=True) as session:
        attributes = {c.id or 0: dict(c.attributes or {}) for c in session.scalars(select(Contact))}
    expected = {
        cid: {k: reference_text(v) for k, v in attrs.items() if v is not None}
        for cid, attrs in attributes.items()
        if any(v is not None for v in attrs.values())
    }
    assert stored_rows(engine) == expected
    return attributes


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@contextmanager
def serving(database_url: str, tmp_path: Path) -> Iterator[TestClient[Any]]:
    env = {
        "TEXTPULSE_DATABASE_URL": database_url,
        "TEXTPULSE_DATA_DIR": str(tmp_path),
        "TEXTPULSE_RATE_LIMIT_API": "off",
    }
    settings = Settings.from_env(env)
    registry = load_plugins(settings, config={})
    with TestClient(app=create_app(settings, registry=registry)) as client:
        yield client
    registry.close()


def audience_ids(engine: Engine, wanted: dict[str, Any]) -> list[int]:
    with session_scope(engine, read_only=True) as session:
        campaign = Campaign(name="filter", audience={"attributes": wanted})
        return [c.id or 0 for c in iter_audience(session, campaign, chunk=7)]


def listed_ids(client: TestClient[Any], params: dict[str, str], limit: int = 7) -> list[int]:
    """Every id GET /api/contacts lists for these filters, page by page."""
    ids: list[int] = []
    cursor: str | None = None
    while True:
        answer = client.get(
            "/api/contacts", params={**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        ids += [item["id"] for item in body["items"]]
        cursor = body["next"]
        if cursor is None:
            return ids


def test_values_are_kept_as_their_text() -> None:
    assert attribute_text("London") == "London"
    assert attribute_text("") == ""
    assert attribute_text(True) == "true" and attribute_text(False) == "false"
    assert attribute_text(30) == attribute_text(30.0) == attribute_text("30") == "30"
    assert attribute_text(-0.0) == "0"
    assert attribute_text(2.5) == "2.5"
    assert attribute_text(10**20) == "100000000000000000000"
    assert attribute_text(1e300) == "1e+300"  # beyond 2**53 an integral float is no exact integer
    assert attribute_text(["b", 1.0, True]) == '["b",1,true]'
    assert attribute_text({"b": 2.0, "a": {"d": None, "c": "é"}}) == '{"a":{"c":"é","d":null},"b":2}'
    assert attribute_text(None) is None


def test_a_long_key_or_value_is_kept_as_its_beginning_and_a_hash() -> None:
    long_text, other = "x" * 600, "x" * 599 + "y"
    assert len(attribute_text(long_text) or "") == VALUE_LIMIT
    assert (attribute_text(long_text) or "").startswith("x" * 400)
    assert attribute_text(long_text) != attribute_text(other)
    assert attribute_text("x" * VALUE_LIMIT) == "x" * VALUE_LIMIT
    assert len(attribute_key("k" * 300)) == KEY_LIMIT and attribute_key("k" * 300) != attribute_key("k" * 301)
    assert attributes_match({"k" * 300: long_text}, {"k" * 300: long_text})


def test_the_table_follows_creates_merges_and_changes(engine: Engine) -> None:
    phones = ["+12025550101", "+12025550102", "+12025550103"]
    first = [
        {"phone": phones[0], "attributes": {"city": "London", "age": 30, "vip": True, "note": None}},
        {"phone": phones[1], "attributes": {"tags": ["b", "a"], "address": {"zip": "N1", "floor": 2.0}}},
        {"phone": phones[2]},
    ]
    assert upsert_contacts(engine, first).created == 3
    attributes = assert_in_step(engine)
    by_phone = {row["phone"]: cid for cid, row in zip(sorted(attributes), first, strict=True)}
    assert stored_rows(engine)[by_phone[phones[0]]] == {"city": "London", "age": "30", "vip": "true"}
    assert stored_rows(engine)[by_phone[phones[1]]]["address"] == '{"floor":2,"zip":"N1"}'
    # A merge of new keys, a changed value, a value set to null, a contact given its first attributes.
    second = [
        {"phone": phones[0], "attributes": {"tier": "gold", "age": 31, "vip": None}},
        {"phone": phones[1], "name": "Bo"},  # no attributes: the rows stay as they are
        {"phone": phones[2], "attributes": {"city": "Paris"}},
    ]
    assert upsert_contacts(engine, second).updated == 3
    assert_in_step(engine)
    assert stored_rows(engine)[by_phone[phones[0]]] == {"city": "London", "age": "31", "tier": "gold"}
    assert stored_rows(engine)[by_phone[phones[2]]] == {"city": "Paris"}
    # The same values again (30 as 30.0: the same text) change nothing, and nothing breaks.
    assert upsert_contacts(engine, [{"phone": phones[0], "attributes": {"age": 31.0}}]).updated == 1
    assert stored_rows(engine)[by_phone[phones[0]]]["age"] == "31"
    assert_in_step(engine)


def test_a_big_upsert_writes_its_rows_in_step(engine: Engine) -> None:
    rows = [{"phone": f"+1202556{i:04d}", "attributes": {"city": f"c{i % 7}", "n": i}} for i in range(1203)]
    upsert_contacts(engine, rows)
    upsert_contacts(engine, [{"phone": r["phone"], "attributes": {"n": -1, "more": "x"}} for r in rows[::2]])
    attributes = assert_in_step(engine)
    assert sum(1 for a in attributes.values() if a.get("more") == "x") == 602


def test_csv_imports_and_contacts_made_by_replies_are_in_step(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    csv_text = "phone,name,city,tier\n+12025550111,Ann,London,gold\n+12025550112,Ben,Paris,\n"
    with serving(database_url, tmp_path) as client:
        answer = client.post("/api/contacts/import", content=csv_text, headers={"content-type": "text/csv"})
        assert answer.json()["created"] == 2, answer.text
        again = "phone,tier\n+12025550112,silver\n"
        assert (
            client.post("/api/contacts/import", content=again, headers={"content-type": "text/csv"}).json()["updated"]
            == 1
        )
        assert listed_ids(client, {"attribute.tier": "silver"}) == [2]
    stop = InboundMessage(from_phone="+12025550199", to="+15550000000", body="STOP")
    assert handle_inbound(engine, "fake", stop, ReplyTexts()).action == "opted_out"  # a contact without attributes
    reply = InboundMessage(from_phone="+12025550111", to="+15550000000", body="Thanks!")
    handle_inbound(engine, "fake", reply, ReplyTexts())
    attributes = assert_in_step(engine)
    assert attributes == {1: {"city": "London", "tier": "gold"}, 2: {"city": "Paris", "tier": "silver"}, 3: {}}


# Values chosen so that texts collide across types: 30, 30.0 and "30"; true and "true"; lists.
VOCABULARY: dict[str, list[Any]] = {
    "city": ["London", "Paris", "Berlin", "london", ""],
    "age": [30, 30.0, "30", 31, 2.5, "2.5"],
    "vip": [True, False, "true", 1, 0],
    "tags": [["a", "b"], ["b", "a"], "a", []],
    "zip": [{"code": "N1"}, {"code": "N1", "floor": 1}, "N1"],
}


def random_attributes(rng: random.Random) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key, values in VOCABULARY.items():
        draw = rng.random()
        if draw < 0.7:
            attributes[key] = rng.choice(values)
        elif draw < 0.8:
            attributes[key] = None  # stored as null in the JSON, no row
    return attributes


def random_filter(rng: random.Random) -> dict[str, Any]:
    wanted: dict[str, Any] = {}
    for key in rng.sample(list(VOCABULARY), rng.choice([1, 1, 2, 3])):
        values = [*VOCABULARY[key], None, "Rome"]
        wanted[key] = rng.sample(values, rng.randint(0, 3)) if rng.random() < 0.4 else rng.choice(values)
    return wanted


def test_filters_agree_with_the_python_rule_over_random_contacts(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    rng = random.Random(13)
    rows = [{"phone": f"+1202557{i:04d}", "attributes": random_attributes(rng)} for i in range(300)]
    upsert_contacts(engine, rows)
    upsert_contacts(engine, [{"phone": r["phone"], "attributes": random_attributes(rng)} for r in rows[::3]])
    attributes = assert_in_step(engine)
    opted_out = set(rng.sample(sorted(attributes), 30))
    with session_scope(engine) as session:
        session.execute(update(Contact).where(col(Contact.id).in_(opted_out)).values(opted_out_at=datetime.now(UTC)))
    for _ in range(80):
        wanted = random_filter(rng)
        expected = [cid for cid in sorted(attributes) if reference_match(attributes[cid], wanted)]
        assert [cid for cid in expected if attributes_match(attributes[cid], wanted)] == expected, wanted
        assert audience_ids(engine, wanted) == [cid for cid in expected if cid not in opted_out], wanted
    texts = sorted({t for values in VOCABULARY.values() for v in values if (t := reference_text(v)) is not None})
    with serving(database_url, tmp_path) as client:
        for _ in range(40):
            keys = rng.sample(list(VOCABULARY), rng.choice([1, 1, 2]))
            params = {key: rng.choice([*texts, "None", "Rome"]) for key in keys}
            expected = [
                cid
                for cid in sorted(attributes)
                if all(reference_text(attributes[cid].get(k)) == v for k, v in params.items())
            ]
            assert listed_ids(client, {f"attribute.{k}": v for k, v in params.items()}) == expected, params


def test_lists_mean_any_several_keys_all_and_null_means_without_the_key(engine: Engine) -> None:
    upsert_contacts(
        engine,
        [
            {"phone": "+12025550121", "attributes": {"city": "London", "tier": "gold", "age": "30"}},
            {"phone": "+12025550122", "attributes": {"city": "London", "tier": "silver"}},
            {"phone": "+12025550123", "attributes": {"city": "Paris", "tier": "gold", "age": 30}},
            {"phone": "+12025550124", "attributes": {"city": "London", "tier": None}},
        ],
    )
    assert audience_ids(engine, {"tier": ["gold", "silver"]}) == [1, 2, 3]
    assert audience_ids(engine, {"city": "London", "tier": ["gold", "silver"]}) == [1, 2]
    assert audience_ids(engine, {"city": "London", "tier": "gold"}) == [1]
    assert audience_ids(engine, {"age": 30}) == [1, 3]  # the number and the string "30"
    assert audience_ids(engine, {"age": 30.0, "city": ["Paris"]}) == [3]
    assert audience_ids(engine, {"tier": None}) == [4]  # null, or no such key
    assert audience_ids(engine, {"tier": ["silver", None]}) == [2, 4]
    assert audience_ids(engine, {"age": None, "tier": None}) == [4]
    assert audience_ids(engine, {"tier": []}) == []
    assert audience_ids(engine, {}) == [1, 2, 3, 4]  # no filter: everyone


def test_opted_out_contacts_stay_out_of_attribute_audiences(engine: Engine) -> None:
    upsert_contacts(engine, [{"phone": f"+1202555013{i}", "attributes": {"city": "London"}} for i in range(4)])
    with session_scope(engine) as session:
        session.execute(update(Contact).where(col(Contact.id).in_([2, 3])).values(opted_out_at=datetime.now(UTC)))
    assert audience_ids(engine, {"city": "London"}) == [1, 4]
    assert audience_ids(engine, {"city": ["London", None]}) == [1, 4]


def _seed_many(engine: Engine, count: int) -> None:
    """`count` contacts in 20 cities, straight into both tables (the plan needs a table of size)."""
    now = datetime.now(UTC)
    with engine.begin() as connection:
        for start in range(0, count, 5000):
            ids = range(start + 1, min(start + 5001, count + 1))
            connection.execute(
                sa.insert(Contact.__table__),  # type: ignore[attr-defined]
                [
                    {
                        "id": i,
                        "phone": f"+1555{i:07d}",
                        "attributes": {"city": f"city{i % 20}"},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
            connection.execute(
                sa.insert(TABLE), [{"contact_id": i, "key": "city", "value": f"city{i % 20}"} for i in ids]
            )
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("ANALYZE contact"))
            connection.execute(sa.text("ANALYZE contact_attribute"))


def test_the_list_filter_reads_the_index(database_url: str, engine: Engine, tmp_path: Path) -> None:
    """The statement GET /api/contacts?attribute.city=... runs, explained on its database: the rows
    come off ix_contact_attribute_key_value, in contact id order (no sort), on both backends."""
    _seed_many(engine, 20_000)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "contact_attribute" in statement and statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", capture)
    try:
        with serving(database_url, tmp_path) as client:
            first = client.get("/api/contacts", params={"attribute.city": "city7", "limit": "100"}).json()
            assert len(first["items"]) == 100 and all(i["attributes"] == {"city": "city7"} for i in first["items"])
            second = client.get(
                "/api/contacts", params={"attribute.city": "city7", "limit": "100", "cursor": first["next"]}
            )
            assert second.json()["items"][0]["id"] == first["items"][-1]["id"] + 20
    finally:
        event.remove(Engine, "before_cursor_execute", capture)
    assert len(statements) == 2
    with engine.connect() as connection:
        for statement, parameters in statements:
            if connection.dialect.name == "sqlite":
                plan = "\n".join(
                    row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                )
                assert (
                    "USING COVERING INDEX ix_contact_attribute_key_value (key=? AND value=? AND contact_id>?)" in plan
                ), plan
                assert "TEMP B-TREE" not in plan, plan
            else:
                lines = [row[0] for row in connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)]
                plan = "\n".join(lines)
                assert "Index Only Scan using ix_contact_attribute_key_value on contact_attribute" in plan, plan
                assert "Sort" not in plan and "Seq Scan" not in plan, plan
                # contact is read from the cursor on (or by id), never from its first row
                reads = [i for i, line in enumerate(lines) if " on contact " in line]
                assert reads and all("Index Cond" in lines[i + 1] for i in reads), plan


def test_the_migration_backfills_existing_contacts(empty_database_url: str) -> None:
    upgrade(empty_database_url, "0011")
    engine = make_engine(empty_database_url)
    now = datetime.now(UTC)
    stored = [
        {"city": "London", "age": 30, "score": 2.0, "vip": True, "note": None},
        {"tags": ["x", "y"], "address": {"zip": "N1", "floor": 1}},
        {},
    ] + [{"n": i} for i in range(5003)]  # past one chunk of the backfill
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO contact (phone, attributes, created_at, updated_at)"
                    " VALUES (:phone, :attributes, :now, :now)"
                ),
                [{"phone": f"+1202558{i:04d}", "attributes": json.dumps(a), "now": now} for i, a in enumerate(stored)],
            )
        upgrade(empty_database_url)
        rows = stored_rows(engine)
        assert rows[1] == {"city": "London", "age": "30", "score": "2", "vip": "true"}
        assert rows[2] == {"tags": '["x","y"]', "address": '{"floor":1,"zip":"N1"}'}
        assert 3 not in rows and rows[5006] == {"n": "5002"} and len(rows) == 5005
        assert_in_step(engine)
        assert audience_ids(engine, {"age": "30"}) == [1]
    finally:
        engine.dispose()
