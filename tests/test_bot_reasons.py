"""A verdict explains itself wherever a click is shown: every reason a built-in filter gives has
words on the dashboard, and a prefetch header's verdict is stored, listed, shown and kept by a
re-score like any other reason (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from litestar.testing import TestClient
from sqlalchemy import select

from api.app import create_app
from api.dashboard import REASON_WORDS, _reason
from core.db import make_engine, session_scope
from core.hooks.registry import load_plugins
from core.models import Click
from core.settings import Settings
from core.tracking.rescore import rescore_campaign
from plugins.bot_behaviour import BEHAVIOUR_REASONS
from tests.test_bot_filters import IPHONE
from tests.test_code_cache import seed, wait_for

BUILT_IN_REASONS = {
    "head_request",
    "no_user_agent",
    "bot_user_agent",
    "too_fast",
    "bot_network",
    "cloud_network",
    "prefetch",
    *BEHAVIOUR_REASONS,
}


def test_every_built_in_reason_has_words() -> None:
    assert set(REASON_WORDS) >= BUILT_IN_REASONS
    for reason in BUILT_IN_REASONS:
        assert _reason(reason) != reason
    assert _reason("bot_user_agent:google_messages") == "user agent of google messages"
    assert _reason("acme_plugin_reason") == "acme_plugin_reason"  # a plugin's: shown as it is


def test_a_prefetch_is_stored_listed_shown_and_kept_by_a_rescore(database_url: str, tmp_path: Path) -> None:
    [code, other] = seed(database_url, [datetime.now(UTC) - timedelta(hours=1)] * 2)
    settings = Settings.from_env({"TEXTPULSE_DATABASE_URL": database_url, "TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={})
    engine = make_engine(database_url)

    def verdicts() -> dict[str, tuple[bool, list[str]]]:
        with session_scope(engine, read_only=True) as session:
            return {c.code: (c.is_bot, list(c.bot_reasons)) for c in session.scalars(select(Click))}

    try:
        with TestClient(app=create_app(settings, registry=registry)) as client:
            headers = {"user-agent": IPHONE, "sec-purpose": "prefetch;prerender"}
            assert client.get(f"/r/{code}", headers=headers, follow_redirects=False).status_code == 302
            assert client.get(f"/r/{other}", headers={"user-agent": IPHONE}, follow_redirects=False).status_code == 302
            wait_for(lambda: len(verdicts()) == 2, what="two click rows")
            assert verdicts() == {code: (True, ["prefetch"]), other: (False, [])}
            with session_scope(engine, read_only=True) as session:
                click = session.scalars(select(Click).where(Click.code == code)).one()
                campaign_id, contact_id = click.campaign_id, click.contact_id
            listed = client.get(f"/api/campaigns/{campaign_id}/clicks", params={"bots": "only"}).json()["items"]
            assert [(c["is_bot"], c["bot_score"], c["bot_reasons"]) for c in listed] == [(True, 1.0, ["prefetch"])]
            page = client.get(f"/contacts/{contact_id}").text
            assert 'data-reason="prefetch"' in page and REASON_WORDS["prefetch"] in page
            campaign_page = client.get(f"/campaigns/{campaign_id}").text
            assert 'data-reason="prefetch"' in campaign_page
        # The header is not stored with the click, so a re-score cannot see it again: it keeps it.
        result = rescore_campaign(engine, campaign_id, registry.bot_filters, registry.together_filters)
        assert result == {"clicks": 2, "changed": 0, "bots": 1, "humans": 1}
        assert verdicts()[code] == (True, ["prefetch"])
    finally:
        registry.close()
        engine.dispose()
