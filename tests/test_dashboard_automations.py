"""The dashboard's automations in a real browser (Debian's chromium, driven by Playwright): a
campaign's follow-ups and runs with working links both ways, a run's page (status, progress,
params, contact, campaigns), the automations page reached from the navigation, the kind badges
of the campaign list and the 404 of an unknown run. The rows are written straight to the
database (no automation runs), so the service runs without a worker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from core.db import session_scope
from core.models import Campaign, Contact, Variant, WorkflowRun
from tests.live import LiveService
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS

FOLLOW_UP_PARAMS = {"after_seconds": 3600, "audience": "not_clicked", "body": "Still hungry? <b>10% off</b>"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def service(database_url: str, temporal_address: str, tmp_path: Path) -> Iterator[LiveService]:
    live = LiveService(
        database_url=database_url, temporal_address=temporal_address, data_dir=tmp_path / "var", run_worker=False
    )
    live.start()
    yield live
    live.stop()


def _campaign(session: Any, name: str, **fields: Any) -> int:
    campaign = Campaign(name=name, status="completed", recipients=4, **fields)
    session.add(campaign)
    session.flush()
    assert campaign.id is not None
    session.add(Variant(campaign_id=campaign.id, name="A", body="Hello"))
    return campaign.id


def _run(session: Any, workflow: str, **fields: Any) -> int:
    run = WorkflowRun(workflow=workflow, workflow_id=f"automation-{workflow}-{fields['temporal_run_id']}", **fields)
    session.add(run)
    session.flush()
    assert run.id is not None
    return run.id


def _automations_data(live: LiveService) -> dict[str, int]:
    """A completed parent with a follow_up run about it (4 matched) and the follow-up it sent; a
    welcome_series run of a contact with its step campaign; a plain campaign with neither."""
    now = datetime.now(UTC)
    with session_scope(live.engine) as session:
        contact = Contact(phone="+12025550190", name="<i>Ann</i>")
        session.add(contact)
        session.flush()
        parent = _campaign(
            session, "Spring <sale>", completed_at=now - timedelta(hours=2), follow_ups=[FOLLOW_UP_PARAMS]
        )
        run = _run(
            session,
            "follow_up",
            temporal_run_id="run-follow-up",
            status="completed",
            params={"campaign_id": parent, **FOLLOW_UP_PARAMS},
            trigger="campaign_completed",
            campaign_id=parent,
            progress={"matched": 4},
            started_at=now - timedelta(hours=2),
            completed_at=now - timedelta(minutes=55),
        )
        follow_up = _campaign(session, "Spring <sale> · follow-up", kind="follow_up", parent_id=parent, run_id=run)
        welcome = _run(
            session,
            "welcome_series",
            temporal_run_id="run-welcome",
            status="running",
            params={"steps": [{"after_seconds": 60, "body": "Welcome!"}], "stop_on": ["reply"]},
            trigger="contact_created",
            contact_id=contact.id,
            progress={"step": 1, "sent": 1},
        )
        step = _campaign(session, "Welcome · step 1", kind="automation", run_id=welcome)
        plain = _campaign(session, "Plain")
        assert contact.id is not None
        return {
            "contact": contact.id,
            "parent": parent,
            "run": run,
            "follow_up": follow_up,
            "welcome": welcome,
            "step": step,
            "plain": plain,
        }


def test_a_campaigns_follow_ups_and_runs_link_to_their_pages(
    service: LiveService, browser: Browser, tmp_path: Path
) -> None:
    live = service
    ids = _automations_data(live)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        # The list tells follow-ups and automation steps apart.
        page.goto(f"{live.url}/")
        rows = page.locator("#campaigns")
        expect(rows.locator(f'tr[data-campaign-id="{ids["follow_up"]}"] [data-col="kind"]')).to_have_text("follow-up")
        expect(rows.locator(f'tr[data-campaign-id="{ids["step"]}"] [data-col="kind"]')).to_have_text("automation")
        assert rows.locator(f'tr[data-campaign-id="{ids["parent"]}"] [data-col="kind"]').count() == 0
        assert rows.locator(f'tr[data-campaign-id="{ids["parent"]}"]').get_attribute("data-kind") == "campaign"

        # The parent's page: its follow-up, the run about it, the follow-up set at launch.
        page.goto(f"{live.url}/campaigns/{ids['parent']}")
        section = page.locator("#follow-ups")
        expect(section).to_be_visible()
        assert section.locator("h2").inner_text() == "Follow-ups & automations"
        assert "after 1 hour to those who did not click." in section.locator("#follow-up-specs").inner_text()
        assert page.locator("#kind").count() == 0 and page.locator("#provenance").count() == 0
        run_row = section.locator(f'#follow-up-runs tr[data-run-id="{ids["run"]}"]')
        assert run_row.locator('[data-col="progress"]').inner_text() == "matched 4"
        assert "completed" in run_row.inner_text() and "about this campaign" in run_row.inner_text()
        page.screenshot(path=str(tmp_path / "parent.png"), full_page=True)
        listed = section.locator(f'#follow-up-campaigns tr[data-campaign-id="{ids["follow_up"]}"]')
        assert "completed" in listed.inner_text()
        listed.get_by_role("link", name="Spring <sale> · follow-up").click()

        # The follow-up's page links back to its parent and to the run that sent it.
        expect(page).to_have_url(f"{live.url}/campaigns/{ids['follow_up']}")
        assert page.locator("h1").inner_text().startswith("Spring <sale> · follow-up")
        expect(page.locator("#kind")).to_have_text("follow-up")
        expect(page.locator("#run-link")).to_have_attribute("href", f"/automations/runs/{ids['run']}")
        assert "sent this campaign" in page.locator(f'#follow-up-runs tr[data-run-id="{ids["run"]}"]').inner_text()
        page.locator("#parent-link").click()
        expect(page).to_have_url(f"{live.url}/campaigns/{ids['parent']}")

        # The run's page: status, progress, params (markup shown as text), its campaigns.
        page.locator(f'#follow-up-runs tr[data-run-id="{ids["run"]}"] a', has_text=f"#{ids['run']}").click()
        expect(page).to_have_url(f"{live.url}/automations/runs/{ids['run']}")
        assert page.locator('h1 [data-col="status"]').inner_text() == "completed"
        assert page.locator('#progress tr[data-key="matched"] [data-col="value"]').inner_text() == "4"
        params = page.locator('#params [data-col="params"]').inner_text()
        assert '"after_seconds": 3600' in params and '"body": "Still hungry? <b>10% off</b>"' in params
        assert f'"campaign_id": {ids["parent"]}' in params and page.locator("#params b").count() == 0
        assert page.locator('[data-col="trigger"]').first.inner_text() == "campaign_completed"
        expect(page.locator('#run-facts [data-col="about"] a')).to_have_attribute("href", f"/campaigns/{ids['parent']}")
        assert page.locator("#campaigns tbody tr").count() == 1
        page.screenshot(path=str(tmp_path / "run.png"), full_page=True)
        page.locator(f'#campaigns tr[data-campaign-id="{ids["follow_up"]}"] a').click()
        expect(page).to_have_url(f"{live.url}/campaigns/{ids['follow_up']}")

        # The automations page, from the navigation: both built-ins with their runs.
        page.locator(".topbar nav").get_by_role("link", name="Automations").click()
        expect(page).to_have_url(f"{live.url}/automations")
        follow_up = page.locator('section[data-automation="follow_up"]')
        welcome = page.locator('section[data-automation="welcome_series"]')
        expect(follow_up).to_be_visible()
        expect(welcome).to_be_visible()
        assert follow_up.locator('[data-col="description"]').inner_text()
        expect(follow_up.locator('[data-trigger="campaign_completed"]')).to_be_visible()
        expect(welcome.locator('[data-trigger="contact_created"]')).to_be_visible()
        assert follow_up.locator('[data-col="total"]').inner_text().startswith("1 run: 1 completed")
        assert follow_up.locator(f'tr[data-run-id="{ids["run"]}"] [data-col="progress"]').inner_text() == "matched 4"
        welcome_row = welcome.locator(f'tr[data-run-id="{ids["welcome"]}"]')
        assert "running" in welcome_row.inner_text() and "step 1 · sent 1" in welcome_row.inner_text()
        page.screenshot(path=str(tmp_path / "automations.png"), full_page=True)

        # A contact's run: its page links the contact (its name as text) and the step campaign.
        welcome_row.get_by_role("link", name=f"#{ids['welcome']}").click()
        expect(page).to_have_url(f"{live.url}/automations/runs/{ids['welcome']}")
        contact = page.locator('#run-facts [data-col="contact"]')
        assert contact.locator("a").inner_text() == "<i>Ann</i>" and contact.locator("i").count() == 0
        expect(contact.locator("a")).to_have_attribute("href", f"/contacts/{ids['contact']}")
        expect(page.locator(f'#campaigns tr[data-campaign-id="{ids["step"]}"]')).to_contain_text("automation")

        # A campaign with no follow-up and no run has no such section.
        page.goto(f"{live.url}/campaigns/{ids['plain']}")
        assert page.locator("#follow-ups").count() == 0

        missing = page.goto(f"{live.url}/automations/runs/999999")
        assert missing is not None and missing.status == 404
        assert page.locator("h1").inner_text() == "Not found"
        assert "automation run 999999 does not exist" in page.locator("main").inner_text()
        assert page_errors == []
    finally:
        context.close()
