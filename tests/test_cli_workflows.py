"""`textpulse workflows ...`: the automations from the command line, through the running
service's HTTP API (API.md "Automations")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveService, free_port, wait_for
from textpulse.workflows_cli import CommandFailed, parse_params


def _textpulse(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEXTPULSE_")}
    environment.update({"TEXTPULSE_LOG_FORMAT": "json", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "textpulse.cli", "workflows", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _completed_campaign(live: LiveService) -> int:
    phones = [f"+1202555{8100 + i:04d}" for i in range(3)]
    assert live.post("/api/contacts", [{"phone": p} for p in phones]).status_code == 200
    body = {"name": "Hello", "variants": [{"name": "A", "body": "Hi https://x.example"}]}
    cid = int(live.post("/api/campaigns", body).json()["id"])
    assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
    wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what=f"campaign {cid} done")
    return cid


def test_run_waits_for_the_follow_up_then_runs_show_and_cancel_see_it(live: LiveService) -> None:
    cid = _completed_campaign(live)
    url = ("--url", live.url)
    ran = _textpulse(
        "run", "follow_up", "--wait", *url,
        "--param", f"campaign_id={cid}", "--param", "after_seconds=0",
        "--param", "body=Hi", "--param", "audience=not_clicked",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    run: dict[str, Any] = json.loads(ran.stdout)
    assert run["workflow"] == "follow_up" and run["status"] == "completed", run
    assert run["params"]["campaign_id"] == cid and run["params"]["body"] == "Hi"
    assert len(run["campaign_ids"]) == 1
    follow = live.get(f"/api/campaigns/{run['campaign_ids'][0]}").json()
    assert follow["kind"] == "follow_up" and follow["parent_id"] == cid

    listed = _textpulse("runs", "--json", "--workflow", "follow_up", *url)
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [run["id"]]
    table = _textpulse("runs", *url)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "STARTED_AT", "CAMPAIGN_IDS", "PROGRESS"]
    assert row.split()[:3] == [str(run["id"]), "follow_up", "completed"]
    assert str(run["campaign_ids"][0]) in row.split()

    shown = _textpulse("show", str(run["id"]), *url)
    assert shown.returncode == 0 and json.loads(shown.stdout) == run

    cancelled = _textpulse("cancel", str(run["id"]), *url)
    assert cancelled.returncode == 2 and cancelled.stdout == ""
    assert cancelled.stderr.startswith("error: ") and "has ended" in cancelled.stderr
    assert "Traceback" not in cancelled.stderr


def test_list_shows_the_automations_and_refusals_exit_2(live: LiveService) -> None:
    url = ("--url", live.url)
    table = _textpulse("list", *url)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split()[1] for line in table.stdout.splitlines()[1:]}
    assert rows["follow_up"] == "campaign_completed" and rows["welcome_series"] == "contact_created"
    as_json = _textpulse("list", "--json", *url)
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == live.get("/api/workflows").json()

    bad = _textpulse("run", "follow_up", "--param", "campaign_id=abc", *url)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and "campaign_id" in bad.stderr and "Traceback" not in bad.stderr

    unknown = _textpulse("run", "nope", *url)
    assert unknown.returncode == 2 and "no automation" in unknown.stderr and "Traceback" not in unknown.stderr
    assert _textpulse("show", "999999", *url).returncode == 2
    assert live.get("/api/workflows/runs").json()["items"] == []  # nothing started


def test_the_api_key_and_the_public_url_come_from_the_settings(
    database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    live = LiveService(
        database_url=database_url,
        temporal_address=temporal_address,
        data_dir=tmp_path,
        env={"TEXTPULSE_API_KEY": "s3cret"},
        run_worker=False,
    )
    live.start()
    try:
        keyed = _textpulse("list", env={"TEXTPULSE_PUBLIC_URL": live.url, "TEXTPULSE_API_KEY": "s3cret"})
        assert keyed.returncode == 0, keyed.stderr
        assert "follow_up" in keyed.stdout
        keyless = _textpulse("list", env={"TEXTPULSE_PUBLIC_URL": live.url})
        assert keyless.returncode == 2 and keyless.stderr.startswith("error: ") and "Bearer" in keyless.stderr
    finally:
        live.stop()


def test_an_unreachable_service_exits_3() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("list",), ("run", "follow_up", "--param", "campaign_id=1"), ("runs",), ("cancel", "1")):
        result = _textpulse(*args, "--url", url)
        assert result.returncode == 3, (args, result.stderr)
        assert result.stderr.startswith(f"error: cannot reach Textpulse at {url}: ")
        assert "Traceback" not in result.stderr


def test_param_values_are_json_when_they_parse_else_text() -> None:
    params = parse_params(
        '{"body": "from --params", "steps": [1], "stop_on": ["reply"]}',
        ["n=3", "x=0.5", "on=true", "none=null", "list=[1, 2]", "obj={\"a\": 1}", 'quoted="7"', "body=Hi there",
         "url=https://x.example/?a=b", "empty=", "nan=NaN"],
    )  # fmt: skip
    assert params == {
        "body": "Hi there",
        "steps": [1],
        "stop_on": ["reply"],
        "n": 3,
        "x": 0.5,
        "on": True,
        "none": None,
        "list": [1, 2],
        "obj": {"a": 1},
        "quoted": "7",
        "url": "https://x.example/?a=b",
        "empty": "",
        "nan": "NaN",
    }
    for bad_json, pairs in (("[1]", []), ("{", []), (None, ["novalue"]), (None, ["=1"])):
        with pytest.raises(CommandFailed) as failed:
            parse_params(bad_json, pairs)
        assert failed.value.status == 2
