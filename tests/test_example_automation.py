"""The example automation of docs/workflows.md (examples/textpulse-abandoned-cart), installed into
the venv with pip like an integrator would, started by the shop's `cart_abandoned` events on the
whole service, and its runs replayed on today's code and on the doc's "Versioning" change."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from core.automations.spec import decode_params
from core.hooks.registry import load_plugins
from core.settings import Settings
from tests.live import LiveService, wait_for

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "examples" / "textpulse-abandoned-cart"
BUYER, LEAVER = "+12025557300", "+12025557301"
PLUGIN_CONFIG: dict[str, Any] = {
    "plugins": {
        "enabled": ["abandoned_cart"],
        "fake": {"delivery_ratio": 1.0, "callback_delay_seconds": [0.01, 0.1], "seed": 7},
    },
    "automations": {"abandoned_cart": {"enabled": True, "wait_seconds": 1.5, "report_after_seconds": 2}},
}


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    """pip-installs the example package (non-editable, --no-deps: importable at once in this
    process) and uninstalls it afterwards, leaving the venv as it was."""
    _pip("install", "--no-deps", str(PACKAGE))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.modules.pop("textpulse_abandoned_cart", None)
        _pip("uninstall", "-y", "textpulse-abandoned-cart")
        importlib.invalidate_caches()


def test_the_installed_package_registers_its_automation(installed: None, tmp_path: Path) -> None:
    from textpulse_abandoned_cart import AbandonedCartParams

    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="textpulse")}
    assert found["abandoned_cart"] == "textpulse_abandoned_cart"
    settings = Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={"automations": {"abandoned_cart": {"enabled": True, "wait_seconds": 60}}})
    try:
        automation = registry.automations()["abandoned_cart"]
        assert (automation.triggers, automation.events) == (("conversion",), ("cart_abandoned",))
        # What a triggered run gets: the table less `enabled`, the rest of the params their defaults.
        assert automation.trigger_params is not None
        assert decode_params(AbandonedCartParams, automation.trigger_params) == AbandonedCartParams(wait_seconds=60)
        assert automation.workflow in registry.workflows()  # the worker runs it
    finally:
        registry.close()
    # Installed but not turned on in plugins.toml: it is listed, and no event starts it.
    registry = load_plugins(settings, config={})
    try:
        assert registry.automations()["abandoned_cart"].trigger_params is None
    finally:
        registry.close()


def _runs(live: LiveService) -> list[dict[str, Any]]:
    response = live.get("/api/workflows/runs", params={"workflow": "abandoned_cart"})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def _ended(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return runs if runs and all(r["status"] != "running" for r in runs) else []


def _event(live: LiveService, phone: str, name: str) -> int:
    response = live.post("/api/events", {"phone": phone, "name": name})
    assert response.status_code == 201, response.text
    return int(response.json()["contact_id"])


def test_a_reminder_goes_to_the_contact_who_did_not_buy(
    installed: None, database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    live = LiveService(
        database_url=database_url, temporal_address=temporal_address, data_dir=tmp_path, plugin_config=PLUGIN_CONFIG
    )
    live.start()
    try:
        listed = {a["name"]: a for a in live.get("/api/workflows").json()["items"]}
        cart = listed["abandoned_cart"]
        assert cart["triggers"] == ["conversion"]
        assert cart["params"]["type"] == "object" and not cart["params"].get("required")
        assert set(cart["params"]["properties"]) == {
            "wait_seconds",
            "body",
            "purchase_event",
            "report_after_seconds",
            "contact_id",
        }
        refused = live.post("/api/workflows/abandoned_cart/runs", {"params": {"wait_seconds": "soon"}})
        assert refused.status_code == 422 and "wait_seconds" in refused.json()["detail"], refused.text

        added = live.post("/api/contacts", [{"phone": BUYER, "name": "Ann"}, {"phone": LEAVER, "name": "Bob"}])
        assert added.json()["created"] == 2, added.text
        buyer, leaver = _event(live, BUYER, "cart_abandoned"), _event(live, LEAVER, "cart_abandoned")
        started = wait_for(lambda: len(r := _runs(live)) == 2 and r, what="a run per abandoned cart", timeout=10)
        assert {r["trigger"] for r in started} == {"conversion"}
        assert {r["contact_id"]: r["workflow_id"] for r in started} == {
            buyer: live.settings.automation_id("abandoned_cart", str(buyer)),
            leaver: live.settings.automation_id("abandoned_cart", str(leaver)),
        }
        _event(live, BUYER, "purchase")  # within wait_seconds: no reminder
        _event(live, LEAVER, "cart_abandoned")  # while its run runs: a signal to it, not a second run

        ended = wait_for(lambda: _ended(_runs(live)), what="both runs ended", timeout=60)
        assert len(ended) == 2 and all(r["status"] == "completed" for r in ended), ended
        by_contact = {r["contact_id"]: r for r in ended}
        assert by_contact[buyer]["progress"] == {"purchased_before_text": True}
        assert by_contact[buyer]["campaign_ids"] == []
        assert by_contact[leaver]["progress"] == {
            "texted": True,
            "purchased": False,
            "recipients": 1,
            "conversions": 0,
            "conversion_rate": 0.0,
        }
        texts = [e for e in live.fake.ledger() if e["to"] in (BUYER, LEAVER)]
        assert Counter(e["to"] for e in texts) == Counter({LEAVER: 1})
        assert texts[0]["body"].startswith(f"Bob, your cart is waiting: {live.url}/r/")  # a tracked link
        [step_id] = by_contact[leaver]["campaign_ids"]
        step = live.get(f"/api/campaigns/{step_id}").json()
        assert (step["name"], step["kind"], step["run_id"]) == ("abandoned_cart: reminder", "automation", None)
        assert step["conversion"]["event"] == "purchase"

        histories = asyncio.run(_histories(temporal_address, [by_contact[buyer], by_contact[leaver]]))
    finally:
        live.stop()
    _replays(histories)


async def _histories(temporal_address: str, runs: list[dict[str, Any]]) -> list[WorkflowHistory]:
    """The runs' histories, through JSON as tests/histories/ keeps them."""
    client = await Client.connect(temporal_address)
    histories = []
    for run in runs:
        history = await client.get_workflow_handle(run["workflow_id"]).fetch_history()
        histories.append(WorkflowHistory.from_json(run["workflow_id"], history.to_json()))
    return histories


def _replays(histories: list[WorkflowHistory]) -> None:
    """Both runs replay on today's code (in the sandbox, as the worker runs them). The leaver's run
    (it was texted) replays on the second reminder of docs/workflows.md "Versioning" when it is
    behind `workflow.patched`, and fails to replay when it is not."""
    from textpulse_abandoned_cart import AbandonedCartWorkflow

    for history in histories:
        asyncio.run(Replayer(workflows=[AbandonedCartWorkflow]).replay_workflow(history))
    leaver = histories[1]
    asyncio.run(_replayer(_second_reminder(AbandonedCartWorkflow, patched=True)).replay_workflow(leaver))
    with pytest.raises(workflow.NondeterminismError):
        asyncio.run(_replayer(_second_reminder(AbandonedCartWorkflow, patched=False)).replay_workflow(leaver))


def _replayer(workflow_class: type) -> Replayer:
    # Classes made in a test function cannot be re-imported by the sandbox: replay them unsandboxed.
    return Replayer(workflows=[workflow_class], workflow_runner=UnsandboxedWorkflowRunner())


def _second_reminder(base: Any, *, patched: bool) -> type:
    """The abandoned cart with the doc's last call: a second text to a contact who did not buy,
    after the report wait and before the stats (the leaver did not buy), behind
    `workflow.patched("second-reminder")` or not."""

    @workflow.defn(name="abandoned_cart")
    class SecondReminder(base):
        @workflow.run
        async def run(self, start: Any) -> dict[str, Any]:
            return await self.execute(start, self.steps)

        async def stats(self, campaign_id: int) -> dict[str, Any]:
            if not patched or workflow.patched("second-reminder"):
                await self.text_contact("last call", "Last call: https://shop.example/cart")
            return await super().stats(campaign_id)

    return SecondReminder
