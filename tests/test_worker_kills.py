"""Workers SIGKILLed mid-campaign: sending resumes on another worker within seconds and nobody is
texted twice.

Through the Twilio stand-in (a real HTTP gateway with its own record of every accepted message):
three kills during a 3,000-message campaign, each time of the one worker sending, a new worker
started at once. The killed batch waits out the heartbeat timeout (5 s here, 20 s by default),
then the new worker asks Twilio which of its messages went (`find_sent`) before sending the rest.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.live import LiveService, wait_for, worker_process
from tests.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioStandIn

N = 3000
KILLS_AT = (500, 1400, 2300)
HEARTBEAT_TIMEOUT = 5


def _worker(live: LiveService, standin: TwilioStandIn, log: Path) -> subprocess.Popen[bytes]:
    return worker_process(
        live,
        log,
        TEXTPULSE_TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TEXTPULSE_TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TEXTPULSE_TWILIO_FROM_NUMBER=FROM_NUMBER,
        TEXTPULSE_TWILIO_API_BASE=standin.url,
    )


def test_three_sigkills_during_a_twilio_campaign_text_nobody_twice(
    scaled_database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    workers: list[subprocess.Popen[bytes]] = []
    with TwilioStandIn() as standin:
        live = LiveService(
            database_url=scaled_database_url,
            temporal_address=temporal_address,
            data_dir=tmp_path / "var",
            run_worker=False,
            plugin_config={
                "plugins": {
                    "twilio": {
                        "account_sid": ACCOUNT_SID,
                        "auth_token": AUTH_TOKEN,
                        "from_number": FROM_NUMBER,
                        "api_base": standin.url,
                    }
                }
            },
            env={
                "TEXTPULSE_BATCH_SIZE": "200",
                "TEXTPULSE_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT),
            },
        )
        live.start()
        try:
            phones = [f"+1202555{i:04d}" for i in range(N)]
            assert live.post("/api/contacts", [{"phone": p} for p in phones]).json()["created"] == N
            body = {
                "name": "Kills",
                "provider": "twilio",
                "rate_limit_per_second": 250,  # one batch at a time: each kill hits the sender
                "variants": [{"name": "A", "body": "Hi"}],
            }
            cid = live.post("/api/campaigns", body).json()["id"]
            workers.append(_worker(live, standin, tmp_path / "worker0.log"))
            assert live.post(f"/api/campaigns/{cid}/launch").status_code == 202
            gaps: list[float] = []
            for number, at in enumerate(KILLS_AT, start=1):
                wait_for(lambda at=at: len(standin.messages) >= at, timeout=120, what=f"{at} messages sent")
                workers[-1].send_signal(signal.SIGKILL)
                workers[-1].wait(10)
                killed_at, sent = time.monotonic(), len(standin.messages)
                assert sent < N, "the campaign finished before the kill: slow it down"
                workers.append(_worker(live, standin, tmp_path / f"worker{number}.log"))
                wait_for(lambda sent=sent: len(standin.messages) > sent + 5, timeout=60, what="sending resumed")
                gaps.append(time.monotonic() - killed_at)
            print(f"sending resumed {', '.join(f'{gap:.1f}' for gap in gaps)} s after each SIGKILL")
            assert all(gap < 30 for gap in gaps), gaps
            wait_for(
                lambda: live.get(f"/api/campaigns/{cid}").json()["status"] == "completed",
                timeout=120,
                what="the campaign completed",
            )
            sends = Counter(message["to"] for message in standin.messages)
            assert len(sends) == N and set(sends) == set(phones)
            twice = [phone for phone, count in sends.items() if count > 1]
            assert not twice, f"{len(twice)} contacts texted twice"
            stats = live.stats(cid)
            assert (stats["recipients"], stats["sent"], stats["queued"], stats["failed"]) == (N, N, 0, 0)
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(15)
            live.stop()
