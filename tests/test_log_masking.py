"""Log lines keep secrets and whole phone numbers out: the processor over events of every shape,
the lines configure_logging renders (structlog's and the standard library's), and the log of a
running `textpulse api` that imported a contact and made a test send."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from core.log_masking import LogMasker, mask_phone
from core.settings import Settings, SettingsError
from tests.live import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
PHONE = "+447911123456"
MASKED = "+44********56"


def masked(event: dict[str, Any], *, mask_phones: bool = True) -> dict[str, Any]:
    return LogMasker(mask_phones=mask_phones)(None, "info", dict(event))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"sent to {PHONE}", f"sent to {MASKED}"),
        ("numbers +12025550123, +33612345678.", "numbers +12*******23, +33*******78."),
        ("To=%2B14155550100&Body=Hi", "To=%2B14*******00&Body=Hi"),
        ("+447700900123", "+44********23"),
        ("+12345678", "+12****78"),  # 8 digits, the shortest E.164 masked
        ("postgresql+psycopg://app:s3cret@db:5432/textpulse", "postgresql+psycopg://app:***@db:5432/textpulse"),
        ("https://me:p@ss@host/x and http://u:v@other", "https://me:***@host/x and http://u:***@other"),
        ("Authorization: Bearer eyJhbGciOi.J9.x-y_z", "Authorization: Bearer ***"),
        ("basic auth: Basic dXNlcjpwYXNzd29yZA==", "basic auth: Basic ***"),
        ("GET /webhooks/x?token=abc123&campaign=4", "GET /webhooks/x?token=***&campaign=4"),
        ("https://h/cb?api_key=k1&X-Api-Key=k2&sig=s", "https://h/cb?api_key=***&X-Api-Key=***&sig=***"),
        ("host=db user=app password=hunter2 dbname=t", "host=db user=app password=*** dbname=t"),
        ('{"code": 20003, "auth_token": "abc"}', '{"code": 20003, "auth_token": "***"}'),
    ],
)
def test_secrets_and_phones_in_text_are_masked(text: str, expected: str) -> None:
    assert LogMasker().text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "campaign-42",
        "2026-12-01T16:50:03+00:00",
        "2026-12-01T16:50:03.123456Z",
        "twilio error 21610: unsubscribed recipient",
        "amount 1234.50 EUR, +12.5%",
        "short code aB3xY9 at http://127.0.0.1:8000/r/aB3xY9",
        "https://shop.example/p?utm_source=sms&utm_campaign=spring&id=1500000000",
        "AccountSid=AC0123456789abcdef0123456789abcdef&MessageSid=SM0123",
        "Basic settings are kept; basically fine",
        "+1234567",  # 7 digits: not E.164
        "+12345678901234567",  # 17 digits: not a phone either
        "idempotency_key=order-7 monkey=1",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert LogMasker().text(text) is text


def test_fields_named_for_phones_are_masked_whatever_their_format() -> None:
    event = masked(
        {
            "event": "sent",
            "phone": "07700 900123",
            "To": "+1 (202) 555-0123",
            "from_number": 447700900999,
            "recipient": "1234",
            "from": "TEXTPULSE",  # an alphanumeric sender id: no digits, nothing to hide
            "recipients": 500,  # a count, not a recipient
            "to_status": "delivered",
        }
    )
    assert event == {
        "event": "sent",
        "phone": "07*** ****23",
        "To": "+1 (2**) ***-**23",
        "from_number": "44********99",
        "recipient": "****",
        "from": "TEXTPULSE",
        "recipients": 500,
        "to_status": "delivered",
    }


def test_fields_named_for_secrets_become_stars_at_any_depth() -> None:
    payload = {"To": PHONE, "headers": {"Authorization": "Bearer x", "Cookie": "s=1", "Accept": "*/*"}}
    event = masked(
        {
            "event": "callback",
            "auth_token": "f00",
            "TEXTPULSE_API_KEY": "k",
            "db_password": 1234,
            "x-twilio-signature": "sig",
            "api_key": None,
            "authenticated": True,
            "payload": payload,
            "attempts": [{"credentials": ("u", "p")}, "to +33612345678"],
            "pairs": [("X-Api-Key", "k"), (b"authorization", b"Bearer y"), ("accept", "json")],
        }
    )
    assert event["auth_token"] == event["TEXTPULSE_API_KEY"] == event["db_password"] == "***"
    assert event["x-twilio-signature"] == "***"
    assert event["api_key"] is None and event["authenticated"] is True
    assert event["payload"] == {"To": MASKED, "headers": {"Authorization": "***", "Cookie": "***", "Accept": "*/*"}}
    assert event["attempts"] == [{"credentials": "***"}, "to +33*******78"]
    assert event["pairs"] == [("X-Api-Key", "***"), (b"authorization", "***"), ("accept", "json")]
    # What the caller logged is its own: copied, never changed.
    assert payload["To"] == PHONE and payload["headers"]["Authorization"] == "Bearer x"  # type: ignore[index]


def test_an_event_with_nothing_to_mask_is_not_copied() -> None:
    nested = {"ids": [1, 2, 3], "by_variant": {"A": 3, "B": 4}}
    event = {"event": "batch sent", "campaign_id": 12, "sent": 500, "detail": nested, "workflow_id": "campaign-12"}
    out = masked(event)
    assert out == event and out["detail"] is nested


def test_phone_masking_can_be_turned_off_but_secrets_cannot() -> None:
    event = masked({"event": f"to {PHONE}", "phone": PHONE, "token": "t", "url": "http://u:p@h/"}, mask_phones=False)
    assert event == {"event": f"to {PHONE}", "phone": PHONE, "token": "***", "url": "http://u:***@h/"}


def test_masking_twice_changes_nothing_more() -> None:
    once = LogMasker().text(f"{PHONE} postgresql://u:pw@h/db ?token=1 Bearer abc")
    assert LogMasker().text(once) == once and "pw" not in once


def test_mask_phone_keeps_two_digits_at_each_end() -> None:
    assert mask_phone(PHONE) == MASKED
    assert mask_phone("+12025550123") == "+12*******23"
    assert mask_phone("12345") == "***45" and mask_phone("") == ""


def test_the_setting_reads_true_or_false() -> None:
    assert Settings.from_env({}).log_mask_phones is True
    assert Settings.from_env({"TEXTPULSE_LOG_MASK_PHONES": "false"}).log_mask_phones is False
    with pytest.raises(SettingsError, match="TEXTPULSE_LOG_MASK_PHONES must be true or false"):
        Settings.from_env({"TEXTPULSE_LOG_MASK_PHONES": "maybe"})


# -- what configure_logging renders ----------------------------------------------------------------

_LOGGING_SCRIPT = f"""
import logging, sys
from core.log import configure_logging, get_logger
configure_logging(sys.argv[1])
get_logger("textpulse.test").warning(
    "sent to {PHONE}", phone="{PHONE}", auth_token="tw-secret-1",
    database="postgresql+psycopg://app:db-secret-2@db/textpulse", campaign_id=7,
)
logging.getLogger("uvicorn.error").warning(
    "callback %s from %s", "https://h/webhooks/twilio/status?token=tok-secret-3", "{PHONE}"
)
logging.getLogger("httpx").warning("HTTP Request: POST https://AC1:tw-secret-1@api.twilio.com/ To=%2B{PHONE[1:]}")
try:
    raise RuntimeError("provider said: Bearer bearer-secret-4 for {PHONE}")
except RuntimeError:
    get_logger("textpulse.test").exception("send failed")
    logging.getLogger("temporalio.activity").exception("activity failed")
"""

SECRETS = ("tw-secret-1", "db-secret-2", "tok-secret-3", "bearer-secret-4")


def _log_through_configure_logging(log_format: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _LOGGING_SCRIPT, log_format],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "TEXTPULSE_LOG_MASK_PHONES": "", **env},
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_structlog_and_stdlib_lines_come_out_masked_in_json() -> None:
    output = _log_through_configure_logging("json")
    lines = [json.loads(line) for line in output.splitlines()]
    assert [line["event"].split(" ")[0] for line in lines] == ["sent", "callback", "HTTP", "send", "activity"]
    structured, foreign, httpx_line, failed, activity = lines
    assert structured["event"] == f"sent to {MASKED}" and structured["phone"] == MASKED
    assert structured["auth_token"] == "***" and structured["campaign_id"] == 7
    assert structured["database"] == "postgresql+psycopg://app:***@db/textpulse"
    assert foreign["logger"] == "uvicorn.error"
    assert foreign["event"] == f"callback https://h/webhooks/twilio/status?token=*** from {MASKED}"
    assert httpx_line["event"] == "HTTP Request: POST https://AC1:***@api.twilio.com/ To=%2B44********56"
    for line in (failed, activity):  # the traceback's text, both ways
        assert "RuntimeError: provider said: Bearer *** for " + MASKED in line["exception"]
    assert PHONE not in output and not any(secret in output for secret in SECRETS)


def test_console_lines_and_their_tracebacks_are_masked_too() -> None:
    output = _log_through_configure_logging("console")
    assert MASKED in output and "Bearer ***" in output and "RuntimeError" in output
    assert PHONE not in output and not any(secret in output for secret in SECRETS)


def test_console_tracebacks_in_colour_are_masked_too() -> None:
    # On a terminal (forced here) a Rich traceback would colour the digits of a phone, and its
    # escape codes would hide it from the masking: tracebacks are plain text.
    output = _log_through_configure_logging("console", FORCE_COLOR="1")
    assert "RuntimeError: provider said: Bearer *** for " + MASKED in output
    assert PHONE[1:] not in output and not any(secret in output for secret in SECRETS)


def test_phones_stay_whole_when_masking_them_is_off() -> None:
    output = _log_through_configure_logging("json", TEXTPULSE_LOG_MASK_PHONES="false")
    assert json.loads(output.splitlines()[0])["phone"] == PHONE
    assert not any(secret in output for secret in SECRETS)


# -- a running service -----------------------------------------------------------------------------

_CRM_PLUGIN = """
import logging, os
from textpulse import hookimpl

log = logging.getLogger("crm_sync")

@hookimpl
def on_contact_created(event):
    # A third-party plugin careless with what it logs, and an error that quotes the contact.
    log.warning("syncing %s, state in %s", event.phone, os.environ["TEXTPULSE_DATABASE_URL"])
    raise RuntimeError(
        f"CRM refused {event.phone}: POST https://sync:crm-pass-5@crm.example/contacts?api_key=crm-key-6"
    )
"""


def test_a_running_service_logs_no_phone_and_no_password(
    scaled_database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    url = make_url(scaled_database_url)
    db_password = "db-pass-7"  # PostgreSQL here trusts the test's user: any password connects
    if url.get_backend_name() == "postgresql":
        scaled_database_url = url.set(password=db_password).render_as_string(hide_password=False)
    (tmp_path / "crm_sync.py").write_text(textwrap.dedent(_CRM_PLUGIN))
    (tmp_path / "plugins.toml").write_text(
        '[plugins]\nenabled = ["crm_sync"]\n\n[plugins.fake]\ncallback_delay_seconds = [0.01, 0.05]\n'
    )
    port = free_port()
    log_path = tmp_path / "api.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "TEXTPULSE_DATA_DIR": str(tmp_path / "var"),
        "TEXTPULSE_DATABASE_URL": scaled_database_url,
        "TEXTPULSE_TEMPORAL_ADDRESS": temporal_address,
        "TEXTPULSE_HTTP_PORT": str(port),
        "TEXTPULSE_TASK_QUEUE": f"logmask-{port}",
        "TEXTPULSE_CONFIG": str(tmp_path / "plugins.toml"),
        "TEXTPULSE_LOG_FORMAT": "json",
        "TEXTPULSE_LOG_MASK_PHONES": "",
        "TEXTPULSE_REDIRECT_PRELOAD_HOURS": "0",
    }
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "textpulse.cli", "api"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            def healthy() -> bool:
                assert process.poll() is None, log_path.read_text()
                try:
                    return http.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(healthy, timeout=30, what="the API to answer")
            imported = http.post("/api/contacts", json=[{"phone": PHONE}])
            assert imported.status_code == 200 and imported.json()["created"] == 1, imported.text
            campaign = http.post("/api/campaigns", json={"name": "Masked", "variants": [{"name": "A", "body": "Hi"}]})
            test_send = http.post(
                f"/api/campaigns/{campaign.json()['id']}/test-send", json={"phones": ["+33612345678"]}
            )
            assert test_send.status_code == 200, test_send.text
            # The API answers with whole numbers: masking is for the logs alone.
            assert test_send.json()["messages"][0]["phone"] == "+33612345678"
            wait_for(
                lambda: "listener failed" in log_path.read_text(), timeout=10, what="the listener's failure logged"
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    synced = next(line for line in lines if line.get("logger") == "crm_sync")
    failed = next(line for line in lines if line["event"] == "on_contact_created listener failed")
    assert synced["event"].startswith(f"syncing {MASKED}, state in ")
    if url.get_backend_name() == "postgresql":
        assert f"//{url.username}:***@{url.host}" in synced["event"]
    assert f"CRM refused {MASKED}: POST https://sync:***@crm.example/contacts?api_key=***" in failed["exception"]
    assert any(line["event"] == "textpulse stopped" for line in lines)
    for secret in (PHONE, PHONE[1:], "+33612345678", "crm-pass-5", "crm-key-6", db_password):
        assert secret not in text, secret
