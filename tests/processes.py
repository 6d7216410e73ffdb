"""Real `tracker` processes for tests: started on free loopback ports, logs kept in files."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

# uvicorn's startup line (logged by `tracker serve`), with the port it bound.
_RUNNING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


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
        # Without a port the server binds port 0 and says which it got (uvicorn's startup line):
        # a port picked here and handed over could be taken by anyone in between.
        self._url = f"http://127.0.0.1:{port}" if port else None
        self.log_path = Path(tempfile.mkstemp(suffix=".log")[1])
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tracker", *args],
                env={**os.environ, "TRACKER_PORT": str(port or 0), **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def url(self) -> str:
        """Where it listens: the port given, or the one its startup line names."""
        if self._url is None:
            self._url = self._listening(seconds=60)  # as wait_ready: migrations first
        return self._url

    def _listening(self, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = _RUNNING.search(self.log)
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                raise AssertionError(f"process exited before listening:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"no startup line in {seconds}s:\n{self.log}")

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
