"""Every log line an activity writes says which campaign (and batch) it is about: the worker's
interceptor binds them, in the thread the activity runs in, and unbinds them after."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from tests.live import LiveService, wait_for


def test_activity_log_lines_carry_the_campaign_and_the_batch(live: LiveService) -> None:
    live.post("/api/contacts", [{"phone": f"+1202555{n:04d}"} for n in range(200, 205)])
    cid = live.post("/api/campaigns", {"name": "Logged", "variants": [{"name": "A", "body": "Hi"}]}).json()["id"]
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
        assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
        wait_for(lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed", what="campaign completed")
        wait_for(lambda: any(line["event"] == "callbacks swept" for line in lines), what="the last activity's line")
    by_event = {line["event"]: line for line in lines if line.get("campaign_id") == cid}

    sent = by_event["batch sent"]
    assert sent["activity"] == "send_batch" and sent["workflow_id"].endswith(f"campaign-{cid}")
    messages = sorted(m["id"] for m in live.messages(cid))
    assert (sent["first_message_id"], sent["last_message_id"]) == (messages[0], messages[-1])
    assert sent["sent"] == 5

    status = by_event["campaign status"]
    assert status["activity"] == "set_campaign_status" and status["moved"] is True

    # The batch ids stay with the batch: the next activity on the same thread does not inherit them.
    swept = by_event["callbacks swept"]
    assert swept["activity"] == "sweep_callbacks" and "first_message_id" not in swept
