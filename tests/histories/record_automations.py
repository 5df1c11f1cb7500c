"""Record histories of the built-in automations for tests/test_automation_replay.py.

    .venv/bin/python tests/histories/record_automations.py tests/histories/automations/

Before changing plugins/follow_up.py, plugins/welcome_series.py or the building blocks they
use (workflows/automation.py), record the histories as the code is (this script, on the commit
before the change), so that the replay test proves runs started on the old code go on after the
deploy. Unlike tests/histories/record.py, the whole service runs (real activities on SQLite, a
Temporal dev server, the fake provider), and each case steers a run down one path:
- follow_up: texts the non-clickers (a child campaign); nobody matches; cancelled while waiting;
- welcome_series: every step sent; stopped by a reply (a signal); cancelled between steps.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.migrate import upgrade
from tests.live import LiveService, free_port, wait_for
from textpulse.devserver import DevServer

OUT = Path(sys.argv[1])


def _campaign(live: LiveService, name: str, phones: list[str]) -> int:
    live.post("/api/contacts", [{"phone": p} for p in phones])
    ids = [c["id"] for c in live.get("/api/contacts", params={"limit": 1000}).json()["items"] if c["phone"] in phones]
    body = {"name": name, "audience": {"contact_ids": ids}, "variants": [{"name": "A", "body": "Hi https://x.example"}]}
    cid = int(live.post("/api/campaigns", body).json()["id"])
    live.post(f"/api/campaigns/{cid}/launch")
    wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what=f"campaign {cid}")
    return cid


def _ended(live: LiveService, run_id: int) -> dict[str, Any]:
    return wait_for(
        lambda: (r := live.get(f"/api/workflows/runs/{run_id}").json())["status"] != "running" and r,
        timeout=60,
        what=f"run {run_id}",
    )


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="record-automations-"))
    server = DevServer(port=free_port(), headless=True, log_file=work / "temporal.log")
    server.start()
    url = f"sqlite:///{work / 'textpulse.db'}"
    upgrade(url)
    steps = [{"after_seconds": 0.2, "body": "Welcome 1"}, {"after_seconds": 2.5, "body": "Welcome 2"}]
    live = LiveService(
        database_url=url,
        temporal_address=server.address,
        data_dir=work / "var",
        plugin_config={
            "plugins": {"fake": {"delivery_ratio": 1.0, "callback_delay_seconds": [0.01, 0.05], "seed": 5}},
            "automations": {"welcome_series": {"enabled": True, "steps": steps, "stop_on": ["reply"]}},
        },
    )
    live.start()
    runs: dict[str, int] = {}
    try:
        texted = _campaign(live, "texted", ["+12025550801", "+12025550802"])
        quiet = _campaign(live, "nobody", ["+12025550803"])
        waiting = _campaign(live, "cancelled", ["+12025550804"])

        def follow_up(cid: int, audience: str, after: float) -> int:
            params = {"campaign_id": cid, "after_seconds": after, "audience": audience, "body": "Follow-up"}
            response = live.post("/api/workflows/follow_up/runs", {"params": params})
            assert response.status_code == 201, response.text
            return int(response.json()["id"])

        runs["follow_up_texted"] = follow_up(texted, "not_clicked", 0.2)
        runs["follow_up_nobody"] = follow_up(quiet, "clicked", 0)
        runs["follow_up_cancelled"] = follow_up(waiting, "not_clicked", 3600)
        # Welcome series: every step; stopped by a reply; cancelled between steps.
        live.post("/api/contacts", [{"phone": "+12025550811"}, {"phone": "+12025550812"}, {"phone": "+12025550813"}])
        names = {"+12025550811": "all_steps", "+12025550812": "replied", "+12025550813": "cancelled"}

        def series() -> dict[str, int]:
            phones = {c["id"]: c["phone"] for c in live.get("/api/contacts", params={"limit": 1000}).json()["items"]}
            listed = live.get("/api/workflows/runs", params={"workflow": "welcome_series"}).json()["items"]
            return {names[phones[r["contact_id"]]]: r["id"] for r in listed if phones[r["contact_id"]] in names}

        found = wait_for(lambda: len(s := series()) == 3 and s, what="three series")
        runs.update({f"welcome_series_{name}": int(run_id) for name, run_id in found.items()})
        time.sleep(1.5)  # step 1 is sent
        live.post("/webhooks/fake/inbound", {"from": "+12025550812", "to": "+15550000000", "body": "hi"})
        live.post(f"/api/workflows/runs/{runs['welcome_series_cancelled']}/cancel")
        time.sleep(0.5)
        live.post(f"/api/workflows/runs/{runs['follow_up_cancelled']}/cancel")
        OUT.mkdir(parents=True, exist_ok=True)
        for name, run_id in runs.items():
            run = _ended(live, run_id)
            print(name, run["status"], run["progress"])
            handle = asyncio.run_coroutine_threadsafe(_history(live, run["workflow_id"]), live._loop).result(30)
            (OUT / f"{name}.json").write_text(handle)
    finally:
        live.stop()
        server.stop()


async def _history(live: LiveService, workflow_id: str) -> str:
    assert live.service is not None and live.service.client is not None
    history = await live.service.client.get_workflow_handle(workflow_id).fetch_history()
    return history.to_json()


if __name__ == "__main__":
    main()
    import os

    os._exit(0)
