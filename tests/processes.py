"""Real `tracker` processes for tests: started on free loopback ports, logs kept in files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_tracker(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one `tracker` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class TrackerProcess:
    """A long-running `tracker ...` command (serve, scheduler, fake-vod) in the background."""

    def __init__(self, *args: str, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(suffix=".log")[1])
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tracker", *args],
                env={**os.environ, "TRACKER_PORT": str(self.port), **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, path: str = "/healthz", seconds: float = 60) -> httpx.Response:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"process exited early:\n{self.log}")
            try:
                return httpx.get(f"{self.url}{path}", timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"{self.url}{path} did not answer in {seconds}s:\n{self.log}")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 15) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log_path.unlink(missing_ok=True)
