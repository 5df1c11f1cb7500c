"""The scaled-out shape of docker-compose.yml, killed in the middle of a campaign.

Two `textpulse api` and two `textpulse worker` processes on one PostgreSQL database and one
Temporal dev server, each process with a data directory of its own (nothing is shared but the
database, Temporal and the gateway), behind a round-robin proxy (the "own proxy" docker-compose.yml
asks for) that the marketer, the phones and the gateway reach. The gateway is the Twilio stand-in,
an HTTP service of its own with its own record of every text it accepted, which posts the status
callbacks through the proxy, retrying a refused or broken connection as Twilio does.

While the campaign sends, one worker and one API process are SIGKILLed. The campaign completes,
its workflow ran once, nobody is texted twice, every callback ends up applied (those that went to
the dead API are posted again and land on the other), and both API replicas — the killed one
started again — answer the same numbers, clicks made through either of them included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.live import free_port, wait_for
from tests.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioStandIn

N = 600
HEARTBEAT_TIMEOUT = 5
PHONE_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


class RoundRobinProxy:
    """A TCP proxy on loopback: each connection goes to the next backend that accepts it."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self._next = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        self.connections: Counter[tuple[str, int]] = Counter()  # per backend, since the start
        threading.Thread(target=self._accept, daemon=True, name="proxy").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        for _ in range(len(self.backends)):
            with self._lock:
                backend = self.backends[self._next % len(self.backends)]
                self._next += 1
            try:
                upstream = socket.create_connection(backend, timeout=2)
                self.connections[backend] += 1
                break
            except OSError:  # that replica is down: the next one
                continue
        if upstream is None:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class Cluster:
    """The processes of the scaled-out shape and what they share."""

    def __init__(self, database_url: str, temporal_address: str, standin: TwilioStandIn, root: Path) -> None:
        self.root = root
        self.api_ports = [free_port(), free_port()]
        self.proxy = RoundRobinProxy([("127.0.0.1", port) for port in self.api_ports])
        tag = secrets.token_hex(4)
        self.workflow_prefix = f"t{tag}-campaign-"
        self.env = {
            **os.environ,
            "TEXTPULSE_DATABASE_URL": database_url,
            "TEXTPULSE_TEMPORAL_ADDRESS": temporal_address,
            "TEXTPULSE_TASK_QUEUE": f"test-{tag}",
            "TEXTPULSE_WORKFLOW_ID_PREFIX": self.workflow_prefix,
            "TEXTPULSE_AUTOMATION_ID_PREFIX": f"t{tag}-automation-",
            "TEXTPULSE_PUBLIC_URL": self.proxy.url,
            "TEXTPULSE_LOG_FORMAT": "json",
            "TEXTPULSE_BATCH_SIZE": "50",
            "TEXTPULSE_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT),
            "TEXTPULSE_STATUS_SETTLE_SECONDS": "2",
        }
        self.plugins = {
            "plugins": {
                # The phones here click a second after the text and open every link: people, here.
                "disabled": ["bot_behaviour"],
                "botfilters": {"min_seconds": 0},
                "twilio": {
                    "account_sid": ACCOUNT_SID,
                    "auth_token": AUTH_TOKEN,
                    "from_number": FROM_NUMBER,
                    "api_base": standin.url,
                },
            }
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """`api-0`, `api-1`, `worker-0`, …: a process of its own, with a data directory of its own."""
        kind, index = name.split("-")
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "plugins.toml"
        config.write_text(_toml(self.plugins))
        env = {**self.env, "TEXTPULSE_DATA_DIR": str(data_dir), "TEXTPULSE_CONFIG": str(config)}
        if kind == "api":
            env["TEXTPULSE_HTTP_PORT"] = str(self.api_ports[int(index)])
        log = (data_dir / "process.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "textpulse.cli", kind], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes[name] = process
        if kind == "api":
            url = f"http://127.0.0.1:{self.api_ports[int(index)]}"
            wait_for(lambda: _healthy(url, process), timeout=60, what=f"{name} answering")
        return process

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def replica(self, index: int) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.api_ports[index]}", timeout=30)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.parent.name} (last lines)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
            for path in sorted(self.root.glob("*/process.log"))
        )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.proxy.close()


def _healthy(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the process serving {url} exited with {process.returncode}")
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _toml(config: dict[str, Any]) -> str:
    """The little TOML these settings need: one table per plugin, values as JSON writes them."""
    plugins = config["plugins"]
    lines = ["[plugins]", f"disabled = {json.dumps(plugins['disabled'])}"]
    for name, table in plugins.items():
        if isinstance(table, dict):
            lines.append(f"[plugins.{name}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _runs(temporal_address: str, workflow_id: str) -> list[str]:
    """The statuses of every run of the campaign's workflow that Temporal knows."""
    from temporalio.client import Client

    async def listed() -> list[str]:
        client = await Client.connect(temporal_address)
        return [
            run.status.name if run.status else "?"
            async for run in client.list_workflows(f'WorkflowId = "{workflow_id}"')
        ]

    return asyncio.run(listed())


def test_a_campaign_survives_a_worker_and_an_api_process_killed_on_the_scaled_out_shape(
    postgres_database_url: str, temporal_address: str, tmp_path: Path
) -> None:
    with TwilioStandIn() as standin:
        cluster = Cluster(postgres_database_url, temporal_address, standin, tmp_path)
        try:
            for name in ("api-0", "api-1", "worker-0", "worker-1"):
                cluster.start(name)
            http = httpx.Client(base_url=cluster.proxy.url, timeout=30)
            phones = [f"+1202555{i:04d}" for i in range(N)]
            assert http.post("/api/contacts", json=[{"phone": p} for p in phones]).json()["created"] == N
            body = {
                "name": "Scaled out",
                "provider": "twilio",
                "rate_limit_per_second": 60,  # ten seconds of sending: the kills land in the middle
                "variants": [{"name": "A", "body": "Winter sale: https://shop.example/winter"}],
            }
            cid = http.post("/api/campaigns", json=body).json()["id"]
            assert http.post(f"/api/campaigns/{cid}/launch").status_code == 202

            # In the middle of the fourth batch of 50: the killed worker has texts out it never recorded.
            wait_for(lambda: len(standin.messages) >= 175, timeout=60, what="175 texts sent", interval=0.02)
            # Both replicas have been serving (the gateway's callbacks, the marketer's calls).
            assert all(cluster.proxy.connections[("127.0.0.1", port)] for port in cluster.api_ports)
            cluster.kill("worker-0")
            cluster.kill("api-0")
            assert len(standin.messages) < N, "the campaign finished before the kills: slow it down"

            wait_for(
                lambda: http.get(f"/api/campaigns/{cid}").json()["status"] == "completed",
                timeout=120,
                what="the campaign completed on what is left",
            )
            sends = Counter(message["to"] for message in standin.messages)
            assert set(sends) == set(phones)
            twice = [phone for phone, count in sends.items() if count > 1]
            assert not twice, f"{len(twice)} contacts texted twice"
            # One run of the campaign's workflow, completed (it ends a moment after the campaign's status).
            workflow_id = f"{cluster.workflow_prefix}{cid}"
            wait_for(lambda: _runs(temporal_address, workflow_id) != ["RUNNING"], timeout=30, what="the workflow ended")
            assert _runs(temporal_address, workflow_id) == ["COMPLETED"]
            # Every callback is in, those the dead API never answered posted again through the proxy.
            stats = wait_for(
                lambda: (s := http.get(f"/api/campaigns/{cid}/stats").json())["delivered"] == N and s,
                timeout=60,
                what="every text delivered",
            )
            assert (stats["recipients"], stats["sent"], stats["queued"], stats["failed"]) == (N, N, 0, 0)

            # The killed replica back; phones open their links through the proxy (both replicas).
            cluster.start("api-0")
            messages = http.get(f"/api/campaigns/{cid}/messages", params={"limit": 1000}).json()["items"]
            assert len(messages) == N
            clicked = messages[:40]
            for message in clicked:
                link = next(word for word in message["body"].split() if "/r/" in word)
                answer = httpx.get(link, headers={"user-agent": PHONE_AGENT}, follow_redirects=False, timeout=30)
                assert answer.status_code == 302 and answer.headers["location"] == "https://shop.example/winter"

            routes = ["stats", "stats/variants", "stats/links", "stats/devices", "stats/funnel"]
            replicas = [cluster.replica(0), cluster.replica(1)]
            wait_for(
                lambda: all(r.get(f"/api/campaigns/{cid}/stats").json()["clicks"]["total"] == 40 for r in replicas),
                timeout=30,
                what="40 clicks counted on both replicas",
            )
            for route in routes:
                answers = [r.get(f"/api/campaigns/{cid}/{route}") for r in replicas]
                assert [a.status_code for a in answers] == [200, 200], route
                # The same numbers; `updated_at` is when each replica computed its answer.
                numbers = [{k: v for k, v in a.json().items() if k != "updated_at"} for a in answers]
                assert numbers[0] == numbers[1], route
            stats = replicas[0].get(f"/api/campaigns/{cid}/stats").json()
            assert (stats["clicks"]["total"], stats["clicks"]["unique"], stats["delivered"]) == (40, 40, N)
            for replica in replicas:
                replica.close()
            http.close()
        except BaseException:
            print(cluster.logs())
            raise
        finally:
            cluster.stop()
