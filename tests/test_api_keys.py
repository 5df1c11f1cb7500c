"""Named API keys (README.md "API keys"): created, rotated and revoked on the database (by the
domain or `textpulse keys`), checked by every API process from hashes it re-reads every
TEXTPULSE_API_KEY_REFRESH_SECONDS (0.2 here), compared in constant time, beside TEXTPULSE_API_KEY."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from structlog.testing import capture_logs

import api.contacts
from core import api_keys
from core.api_keys import KeyVerifier
from core.db import make_engine
from core.errors import Conflict, Invalid, NotFound
from core.log_masking import LogMasker
from core.models import utcnow
from tests.live import LiveService, wait_for

REFRESH = 0.2
SECRET = re.compile(r"tp_[A-Za-z0-9_-]{40}")


def _service(database_url: str, temporal_address: str, data_dir: Path, **env: str) -> LiveService:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=data_dir,
        env={"TEXTPULSE_API_KEY_REFRESH_SECONDS": str(REFRESH), **env},
        run_worker=False,
    )
    live.start()
    return live


@pytest.fixture
def service(database_url: str, temporal_address: str, tmp_path: Path) -> Iterator[LiveService]:
    """The API alone, on a database without keys, reading them every 0.2 s."""
    live = _service(database_url, temporal_address, tmp_path / "var")
    yield live
    live.stop()


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def _status(live: LiveService, secret: str | None) -> int:
    return live.get("/api/contacts", headers=_bearer(secret) if secret else {}).status_code


def test_a_created_key_closes_the_api_to_others_and_only_the_api(service: LiveService) -> None:
    assert _status(service, None) == 200  # no key anywhere: open, as before keys existed
    secret = api_keys.create(service.engine, "ci")
    wait_for(lambda: _status(service, None) == 401, timeout=5, what="the new key read")
    denied = service.get("/api/contacts")
    assert "Bearer" in denied.json()["detail"] and denied.headers["www-authenticate"] == "Bearer"
    for wrong in (f"Bearer {secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}", f"bearer{secret}", f"Basic {secret}"):
        assert service.get("/api/contacts", headers={"authorization": wrong}).status_code == 401, wrong
    assert service.post("/api/contacts", [{"phone": "+12025550100"}], headers=_bearer(secret)).status_code == 200
    assert service.get("/api/contacts", headers={"authorization": f"bearer {secret}"}).status_code == 200
    assert service.get("/health").status_code == 200
    assert service.get("/r/unknown00").status_code == 404
    assert service.post("/webhooks/fake/status", {"message_id": "nobody", "status": "sent"}).status_code == 200


def test_named_keys_and_the_env_key_each_work_and_the_log_names_which(
    database_url: str, temporal_address: str, tmp_path: Path, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {"ci": api_keys.create(engine, "ci"), "shop.prod": api_keys.create(engine, "shop.prod"), "env": "s3cret"}
    probe = structlog.get_logger("tests.probe")
    upsert = api.contacts.upsert_contacts

    def logged_upsert(*args: Any, **kwargs: Any) -> Any:
        probe.info("contacts upserted")  # a line logged inside the request, in its handler's thread
        return upsert(*args, **kwargs)

    monkeypatch.setattr(api.contacts, "upsert_contacts", logged_upsert)
    live = _service(database_url, temporal_address, tmp_path / "var", TEXTPULSE_API_KEY="s3cret")
    try:
        for name, secret in secrets.items():
            with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
                response = live.post("/api/contacts", [{"phone": "+12025550101"}], headers=_bearer(secret))
            assert response.status_code == 200, (name, response.text)
            [line] = [line for line in lines if line["event"] == "contacts upserted"]
            assert line["key_name"] == name and line["path"] == "/api/contacts"
            # The name survives the masking of secrets every configured log line goes through.
            assert LogMasker(mask_phones=True)(None, "info", dict(line))["key_name"] == name
        assert _status(live, "s3cret-not") == 401
        assert live.get("/health").status_code == 200
    finally:
        live.stop()


def test_a_rotated_secret_works_until_its_grace_ends_then_only_the_new_one(service: LiveService) -> None:
    old = api_keys.create(service.engine, "ci")
    wait_for(lambda: _status(service, old) == 200 and _status(service, None) == 401, timeout=5, what="the key read")
    rotated_at = time.monotonic()
    new = api_keys.rotate(service.engine, "ci", grace_seconds=1)
    assert new != old and SECRET.fullmatch(new)
    listed = [k for k in api_keys.list_keys(service.engine) if k.name == "ci"]
    assert [(k.prefix, k.expires_at is None) for k in listed] == [(old[:8], False), (new[:8], True)]
    wait_for(lambda: _status(service, new) == 200, timeout=5, what="the new secret read")
    assert _status(service, old) == 200  # both, during the grace
    wait_for(lambda: _status(service, old) == 401, timeout=5, interval=0.05, what="the old secret's grace over")
    assert time.monotonic() - rotated_at >= 0.95
    assert _status(service, new) == 200
    assert [k.prefix for k in api_keys.list_keys(service.engine)] == [new[:8]]


def _keys(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEXTPULSE_")}
    environment.update({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_LOG_FORMAT": "json"})
    return subprocess.run(
        [sys.executable, "-m", "textpulse.cli", "keys", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_rotates_and_revokes_and_every_api_process_follows_within_the_refresh(
    database_url: str, temporal_address: str, tmp_path: Path, engine: sa.Engine
) -> None:
    """Two API processes on one database; `textpulse keys` changes what both accept within ~0.2 s."""
    keep = api_keys.create(engine, "ops")  # some key stays live: with none left /api would be open
    created = _keys(database_url, "create", "ci")
    assert created.returncode == 0, created.stderr
    first = created.stdout.strip()
    assert SECRET.fullmatch(first) and "only time this secret is shown" in created.stderr
    replicas = [_service(database_url, temporal_address, tmp_path / f"var{n}") for n in range(2)]
    try:
        assert all(_status(r, first) == 200 and _status(r, keep) == 200 for r in replicas)

        rotated = _keys(database_url, "rotate", "ci", "--grace", "0")
        assert rotated.returncode == 0, rotated.stderr
        second = rotated.stdout.strip()
        assert SECRET.fullmatch(second) and "only time this secret is shown" in rotated.stderr
        changed_at = time.monotonic()
        for replica in replicas:
            wait_for(lambda r=replica: _status(r, first) == 401, timeout=5, interval=0.05, what="old secret refused")
            wait_for(lambda r=replica: _status(r, second) == 200, timeout=5, interval=0.05, what="new secret read")
        assert time.monotonic() - changed_at < 2  # the refresh, not a restart

        listing = _keys(database_url, "list", "--json")
        assert listing.returncode == 0, listing.stderr
        assert [(k["name"], k["prefix"], k["expires_at"]) for k in json.loads(listing.stdout)] == [
            ("ci", second[:8], None),
            ("ops", keep[:8], None),
        ]
        for secret in (first, second, keep):
            assert secret not in listing.stdout and api_keys.hash_secret(secret) not in listing.stdout

        revoked = _keys(database_url, "revoke", "ci")
        assert revoked.returncode == 0, revoked.stderr
        changed_at = time.monotonic()
        for replica in replicas:
            wait_for(lambda r=replica: _status(r, second) == 401, timeout=5, interval=0.05, what="revoked refused")
            assert _status(replica, keep) == 200
        assert time.monotonic() - changed_at < 2

        unknown = _keys(database_url, "revoke", "nope")
        assert unknown.returncode == 2 and "no API key named 'nope'" in unknown.stderr
    finally:
        for replica in replicas:
            replica.stop()


def test_cli_refusals_exit_2(database_url: str, engine: sa.Engine, capsys: pytest.CaptureFixture[str]) -> None:
    from core.settings import Settings
    from textpulse.cli import build_parser

    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url})

    def keys(*argv: str) -> tuple[int, str]:
        args = build_parser().parse_args(["keys", *argv])
        status = int(args.func(settings, args))
        return status, capsys.readouterr().err

    api_keys.create(engine, "ci")
    for argv, said in (
        (("create", "ci"), "exists"),
        (("create", "Bad"), "1 to 64"),
        (("create", "x" * 65), "1 to 64"),
        (("create", "env"), "TEXTPULSE_API_KEY"),
        (("rotate", "nope"), "no API key named 'nope'"),
        (("rotate", "ci", "--grace", "-1"), "0 to 31622400 seconds"),
        (("rotate", "ci", "--grace", "1e12"), "0 to 31622400 seconds"),
        (("revoke", "nope"), "no API key named 'nope'"),
    ):
        status, err = keys(*argv)
        assert status == 2 and said in err, (argv, status, err)
    assert keys("revoke", "ci") == (
        0,
        "API key 'ci' revoked (1 secret).\nNo API key is left: /api is open unless TEXTPULSE_API_KEY is set.\n",
    )
    status, _ = keys("list")
    assert status == 0 and capsys.readouterr().out == ""


def test_only_the_hash_of_a_secret_is_stored(engine: sa.Engine) -> None:
    secret = api_keys.create(engine, "ci")
    assert SECRET.fullmatch(secret) and secret != api_keys.create(engine, "ci2")
    with engine.connect() as connection:
        row = connection.execute(sa.text("SELECT * FROM api_key WHERE name = 'ci'")).mappings().one()
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["prefix"] == secret[:8]
    assert not [column for column, value in row.items() if column != "prefix" and secret[3:] in str(value)]
    [listed] = [k for k in api_keys.list_keys(engine) if k.name == "ci"]
    assert set(vars(listed)) == {"name", "prefix", "created_at", "expires_at", "last_used_at"}


def test_the_verifier_compares_every_live_hash_even_when_the_first_matches(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = {name: api_keys.create(engine, name) for name in ("a", "b", "c")}
    api_keys.revoke(engine, "c")  # revoked: not compared at all
    secrets = {"env": "s3cret", "a": stored["a"], "b": stored["b"]}
    verifier = KeyVerifier(engine, env_secret="s3cret")
    verifier.reload()
    known = {api_keys.hash_secret(s).encode() for s in secrets.values()}
    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert verifier.verify("tp_wrong") is None
    assert len(compared) == 3 and set(compared) == known
    first = {api_keys.hash_secret(s).encode(): name for name, s in secrets.items()}[compared[0]]
    for name in [first, *(n for n in secrets if n != first)]:  # the first compared: still all three
        compared.clear()
        assert verifier.verify(secrets[name]) == name
        assert len(compared) == 3 and set(compared) == known, name
    compared.clear()
    assert verifier.verify(stored["c"]) is None and len(compared) == 3


def test_last_used_at_is_written_with_the_refresh_at_most_once_a_minute(engine: sa.Engine) -> None:
    secret = api_keys.create(engine, "ci")
    verifier = KeyVerifier(engine, env_secret=None)
    verifier.reload()
    updates: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            updates.append(statement)

    before = utcnow()
    for _ in range(5):
        assert verifier.verify(secret) == "ci"
    assert updates == []  # verifying never writes
    verifier.reload()
    assert len(updates) == 1
    [key] = api_keys.list_keys(engine)
    assert key.last_used_at is not None and key.last_used_at >= before
    for _ in range(5):
        assert verifier.verify(secret) == "ci"
    verifier.reload()
    assert len(updates) == 1 and api_keys.list_keys(engine)[0].last_used_at == key.last_used_at
    verifier.touch_seconds = 0  # as if the minute had passed
    assert verifier.verify(secret) == "ci"
    verifier.reload()
    assert len(updates) == 2 and api_keys.list_keys(engine)[0].last_used_at > key.last_used_at


def test_names_the_kinds_of_refusal_and_one_current_key_per_name(engine: sa.Engine) -> None:
    api_keys.create(engine, "ci")
    with pytest.raises(Conflict):
        api_keys.create(engine, "ci")
    for bad in ("", "CI", "a b", "x" * 65, "ci/prod", "env"):
        with pytest.raises(Invalid):
            api_keys.create(engine, bad)
    api_keys.create(engine, "a" * 64)
    with pytest.raises(NotFound):
        api_keys.rotate(engine, "nope")
    with pytest.raises(NotFound):
        api_keys.revoke(engine, "nope")
    with pytest.raises(Invalid):
        api_keys.rotate(engine, "ci", grace_seconds=float("nan"))
    api_keys.rotate(engine, "ci", grace_seconds=0)
    assert api_keys.revoke(engine, "ci") == 1  # the rotated-out secret had ended already
    api_keys.create(engine, "ci")  # a revoked name can be made again

    # The database itself holds a name to one current key; rows being rotated out do not count.
    insert = sa.text(
        "INSERT INTO api_key (name, secret_hash, prefix, created_at, expires_at)"
        " VALUES ('ci', :hash, 'tp_xxxxx', :now, :expires)"
    )
    with engine.begin() as connection:
        connection.execute(insert, {"hash": "1" * 64, "now": utcnow(), "expires": utcnow()})
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert, {"hash": "2" * 64, "now": utcnow(), "expires": None})


def test_keys_not_read_yet_keep_the_api_closed(empty_database_url: str) -> None:
    """A database without the table (not migrated): nothing is open, TEXTPULSE_API_KEY still works."""
    engine = make_engine(empty_database_url)
    try:
        for env_secret in (None, "s3cret"):
            verifier = KeyVerifier(engine, env_secret=env_secret)
            with pytest.raises(sa.exc.DBAPIError):
                verifier.reload()
            assert verifier.required and not verifier.loaded
            assert verifier.verify("s3cret") == ("env" if env_secret else None)
    finally:
        engine.dispose()


# -- the dashboard's sessions (api/dashboard.py, api/auth.py) ------------------------------------
def test_a_session_names_its_key_and_ends_with_the_secret_that_made_it(engine: sa.Engine) -> None:
    ci, shop = api_keys.create(engine, "ci"), api_keys.create(engine, "shop.prod")
    verifier = KeyVerifier(engine, env_secret="s3cret")
    verifier.reload()
    sessions = {name: verifier.start_session(secret) for name, secret in (("ci", ci), ("shop.prod", shop))}
    sessions["env"] = verifier.start_session("s3cret")
    for name, session in sessions.items():
        assert session is not None and session.startswith(f"{name}.") and verifier.verify_session(session) == name
        assert not any(secret in session for secret in (ci, shop, "s3cret")), "a session never holds a secret"
    assert verifier.start_session("tp_wrong") is None
    session = sessions["ci"]
    assert session is not None
    name, ends, mac = session.rsplit(".", 2)
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    for forged in (
        f"{name}.{ends}.{flipped}",
        f"shop.prod.{ends}.{mac}",  # another key's name with ci's HMAC
        f"{name}.{int(ends) + 1}.{mac}",  # a longer life
        f"{name}.{ends}",
        mac,
        "",
        f"{name}.{ends}.{mac}\u0301",
    ):
        assert verifier.verify_session(forged) is None, forged
    assert verifier.verify_session(verifier.start_session(ci, seconds=0) or "") is None  # its end has come

    api_keys.rotate(engine, "ci", grace_seconds=3600)
    verifier.reload()
    assert verifier.verify_session(session) == "ci"  # the rotated-out secret's grace: still in
    api_keys.rotate(engine, "ci", grace_seconds=0)
    verifier.reload()
    assert verifier.verify_session(session) is None
    api_keys.revoke(engine, "shop.prod")
    assert verifier.verify_session(sessions["shop.prod"] or "") == "shop.prod"  # until the next read
    verifier.reload()
    assert verifier.verify_session(sessions["shop.prod"] or "") is None
    assert verifier.verify_session(sessions["env"] or "") == "env"


def test_a_session_is_compared_with_every_live_secret_of_its_name(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = api_keys.create(engine, "ci")
    new = api_keys.rotate(engine, "ci", grace_seconds=3600)
    api_keys.create(engine, "other")
    verifier = KeyVerifier(engine, env_secret="s3cret")
    verifier.reload()
    sessions = [verifier.start_session(old), verifier.start_session(new)]
    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for session in sessions:
        assert session is not None
        compared.clear()
        assert verifier.verify_session(session) == "ci"
        assert len(set(compared)) == 2  # ci's two secrets, whichever made it; not other's nor env's
    compared.clear()
    assert verifier.verify_session(f"nobody.{sessions[0].split('.', 1)[1]}") is None and compared == []


def _session_of(set_cookie: str) -> str:
    value = set_cookie.split(";", 1)[0]
    assert value.startswith("textpulse_dashboard="), set_cookie
    return value.removeprefix("textpulse_dashboard=")


def test_a_dashboard_session_reads_the_api_never_writes_and_ends_with_its_key(
    service: LiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only stored keys (no TEXTPULSE_API_KEY): the dashboard asks for one, a named key signs in,
    and its cookie reads /api (naming the key in the log) until the key is rotated out or revoked."""
    api_keys.create(service.engine, "ops")  # stays live: with no key left, /api would open again
    secret = api_keys.create(service.engine, "ci")
    wait_for(lambda: _status(service, None) == 401, timeout=5, what="the keys read")
    asked = service.get("/")
    assert asked.status_code == 401 and 'action="/login"' in asked.text
    assert "not the right one" in service.get("/?key=tp_wrong").text
    made = service.post(
        "/api/campaigns", {"name": "S", "variants": [{"name": "A", "body": "Hi"}]}, headers=_bearer(secret)
    )
    cid = made.json()["id"]

    signed_in = service.get(f"/campaigns/{cid}?key={secret}&tab=log")
    service.http.cookies.clear()  # each request below says what it carries
    assert signed_in.status_code == 303 and signed_in.headers["location"] == f"/campaigns/{cid}?tab=log"
    set_cookie = signed_in.headers["set-cookie"]
    flags = [flag.strip().lower() for flag in set_cookie.split(";")[1:]]
    assert {"httponly", "samesite=lax", "path=/", "max-age=2592000"} <= set(flags) and "secure" not in flags
    session = _session_of(set_cookie)
    assert session.startswith("ci.") and secret not in set_cookie

    def reads(path: str) -> int:
        return service.get(path, headers={"cookie": f"textpulse_dashboard={session}"}).status_code

    page = service.get(f"/campaigns/{cid}", headers={"cookie": f"textpulse_dashboard={session}"})
    assert page.status_code == 200 and "textpulse-api-key" not in page.text and secret not in page.text
    assert reads(f"/campaigns/{cid}/export.csv") == 200
    probe = structlog.get_logger("tests.probe")
    listed = api.contacts.page

    def logged_page(*args: Any, **kwargs: Any) -> Any:
        probe.info("contacts listed")  # a line logged inside the request, in its handler's thread
        return listed(*args, **kwargs)

    monkeypatch.setattr(api.contacts, "page", logged_page)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
        assert reads("/api/contacts") == 200
    assert [line["key_name"] for line in lines if line["event"] == "contacts listed"] == ["ci"]
    assert reads(f"/api/campaigns/{cid}/stats") == 200
    # Writes take only the Bearer secret: another site's page can make a browser POST with the cookie.
    cookie_only = {"cookie": f"textpulse_dashboard={session}"}
    assert service.post("/api/contacts", [{"phone": "+12025550100"}], headers=cookie_only).status_code == 401
    assert service.post(f"/api/campaigns/{cid}/launch", headers=cookie_only).status_code == 401

    by_form = service.post("/login", data={"key": secret, "next": f"/campaigns/{cid}"})
    service.http.cookies.clear()
    assert by_form.status_code == 303 and by_form.headers["location"] == f"/campaigns/{cid}"
    assert _session_of(by_form.headers["set-cookie"]).startswith("ci.")

    new = api_keys.rotate(service.engine, "ci", grace_seconds=1)
    rotated_at = time.monotonic()
    assert reads(f"/api/campaigns/{cid}/stats") == 200  # the old secret's grace
    wait_for(lambda: reads(f"/api/campaigns/{cid}/stats") == 401, timeout=5, interval=0.05, what="grace over")
    assert reads("/") == 401 and time.monotonic() - rotated_at >= 0.95

    session = _session_of(service.get(f"/?key={new}").headers["set-cookie"])
    service.http.cookies.clear()
    assert reads("/") == 200 and reads(f"/api/campaigns/{cid}/stats") == 200
    api_keys.revoke(service.engine, "ci")
    revoked_at = time.monotonic()
    wait_for(lambda: reads(f"/api/campaigns/{cid}/stats") == 401, timeout=5, interval=0.05, what="revoked refused")
    assert reads("/") == 401 and time.monotonic() - revoked_at < 2  # the refresh (0.2 s), not a restart
