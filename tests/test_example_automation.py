"""The example automation of docs/workflows.md (examples/textpulse-abandoned-cart), installed into
the venv with pip like an integrator would, started by the shop's `cart_abandoned` events on the
whole service, and its runs replayed on today's code and on the doc's "Versioning" change."""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from core.automations.spec import decode_params
from core.hooks.registry import load_plugins
from core.settings import Settings
from tests.live import LiveService, wait_for
from tests.packages import installed as installed_package

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "examples" / "textpulse-abandoned-cart"
BUYER, LEAVER, BY_HAND = "+12025557300", "+12025557301", "+12025557302"
PLUGIN_CONFIG: dict[str, Any] = {
    "plugins": {
        "enabled": ["abandoned_cart"],
        "fake": {"delivery_ratio": 1.0, "callback_delay_seconds": [0.01, 0.1], "seed": 7},
    },
    "automations": {"abandoned_cart": {"enabled": True, "wait_seconds": 1.5, "report_after_seconds": 2}},
}


def _section(markdown: str, title: str) -> str:
    """The text under `### <title>`, up to the next heading."""
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^#{{1,3}} |\Z)", markdown, re.MULTILINE | re.DOTALL)
    assert match, f"docs/workflows.md has no '### {title}'"
    return match.group(1)


def _blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)


def _lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip()}


def test_the_tutorial_shows_the_examples_code_as_it_is() -> None:
    doc = (ROOT / "docs" / "workflows.md").read_text(encoding="utf-8")
    automations = doc[doc.index("\n# Automations\n") :]
    for block in _blocks(automations, "python"):  # excerpts of methods too: compiled as a body
        compile("async def _():\n" + textwrap.indent(textwrap.dedent(block), "    "), "docs/workflows.md", "exec")
    shown = {
        "examples/textpulse-abandoned-cart/textpulse_abandoned_cart.py": [
            block
            for title in ("The imports", "The params", "The workflow", "Registering it")
            for block in _blocks(_section(automations, title), "python")
        ],
        "examples/textpulse-abandoned-cart/pyproject.toml": _blocks(
            _section(automations, "A package of your own"), "toml"
        ),
        "tests/abandoned_cart_v2.py": _blocks(_section(automations, "Versioning with workflow.patched"), "python"),
    }
    example = ast.parse((ROOT / "examples/textpulse-abandoned-cart/textpulse_abandoned_cart.py").read_text())
    imported = {n.module for n in ast.walk(example) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(example) if isinstance(n, ast.Import) for a in n.names}
    assert {"textpulse", "textpulse.automation"} <= imported  # and nothing else of Textpulse's:
    assert not {m for m in imported if m and m.split(".")[0] in ("core", "plugins", "api", "workflows")}
    for path, blocks in shown.items():
        assert blocks, path
        source = _lines((ROOT / path).read_text(encoding="utf-8"))
        for block in blocks:
            missing = _lines(block) - source
            assert not missing, f"docs/workflows.md shows lines that {path} does not have: {missing}"


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    with installed_package(PACKAGE, "textpulse-abandoned-cart", "textpulse_abandoned_cart"):
        yield


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


def _textpulse(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEXTPULSE_")}
    return subprocess.run(
        [sys.executable, "-m", "textpulse.cli", "workflows", *args],
        env={**environment, "TEXTPULSE_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ended(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return runs if runs and all(r["status"] != "running" for r in runs) else []


def _event(live: LiveService, phone: str, name: str) -> int:
    response = live.post("/api/events", {"phone": phone, "name": name})
    assert response.status_code == 201, response.text
    return int(response.json()["contact_id"])


def test_a_reminder_goes_to_the_contact_who_did_not_buy(
    installed: None, database_url: str, temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
        wait_for(lambda: len(_runs(live)) == 2, what="a run per abandoned cart", timeout=10)
        started = _runs(live)
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

        # By hand, as docs/workflows.md shows it: a run for a contact who abandoned no cart, its
        # wait counted from its start; its other report window (the reminder's conversion window)
        # makes it a step campaign of its own, so no campaign mixes two definitions of conversion.
        assert live.post("/api/contacts", [{"phone": BY_HAND, "name": "Cy"}]).json()["created"] == 1
        [by_hand] = [c["id"] for c in live.get("/api/contacts", params={"phone": BY_HAND}).json()["items"]]
        ran = _textpulse(
            "run", "abandoned_cart", "--wait", "--url", live.url,
            "--param", f"contact_id={by_hand}", "--param", "wait_seconds=0.5", "--param", "report_after_seconds=0.5",
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        run = json.loads(ran.stdout)
        assert (run["status"], run["trigger"], run["contact_id"]) == ("completed", None, by_hand)
        [other_step] = run["campaign_ids"]
        assert other_step != step_id
        assert live.get(f"/api/campaigns/{other_step}").json()["name"] == "abandoned_cart: reminder"
        assert run["progress"] == {
            "texted": True,
            "purchased": False,
            "recipients": 1,
            "conversions": 0,
            "conversion_rate": 0.0,
        }
        assert [e["to"] for e in live.fake.ledger()].count(BY_HAND) == 1

        histories = asyncio.run(_histories(temporal_address, [by_contact[buyer], by_contact[leaver]]))
    finally:
        live.stop()
    _replays(histories, monkeypatch)


async def _histories(temporal_address: str, runs: list[dict[str, Any]]) -> list[WorkflowHistory]:
    """The runs' histories, through JSON as tests/histories/ keeps them."""
    client = await Client.connect(temporal_address)
    histories = []
    for run in runs:
        history = await client.get_workflow_handle(run["workflow_id"]).fetch_history()
        histories.append(WorkflowHistory.from_json(run["workflow_id"], history.to_json()))
    return histories


def _replays(histories: list[WorkflowHistory], monkeypatch: pytest.MonkeyPatch) -> None:
    """Both runs replay on today's code, in the sandbox as the worker runs them. Version 2 of
    docs/workflows.md "Versioning" (tests/abandoned_cart_v2.py: a second reminder) replays them
    too, its change behind `workflow.patched`; shipped without that guard (`patched` always
    true), the texted contact's run does not replay."""
    from textpulse_abandoned_cart import AbandonedCartWorkflow

    from tests.abandoned_cart_v2 import AbandonedCartWorkflowV2

    for workflow_class in (AbandonedCartWorkflow, AbandonedCartWorkflowV2):
        for history in histories:
            asyncio.run(Replayer(workflows=[workflow_class]).replay_workflow(history))
    monkeypatch.setattr(workflow, "patched", lambda patch_id: True)
    buyer, leaver = histories
    asyncio.run(Replayer(workflows=[AbandonedCartWorkflowV2]).replay_workflow(buyer))  # never got that far
    with pytest.raises(workflow.NondeterminismError):
        asyncio.run(Replayer(workflows=[AbandonedCartWorkflowV2]).replay_workflow(leaver))
