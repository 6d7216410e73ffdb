"""`tracker fake-vod`: its options, its startup line, and the ports it takes (free ones only)."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from tracker.cli import main

AK, SECRET, KEY = "LTAIsimulator", "SimulatorSecret", "CallbackKey123"
LISTENING = re.compile(r"^fake VOD listening on (http://\S+) ")


class Simulator:
    """One `tracker fake-vod` process, stopped at the end; `line` is its startup line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tracker", "fake-vod", *args],
            env={
                **os.environ,
                "ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
                **(env or {}),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err = ""
        self.line = self._first_line(30)

    def _first_line(self, seconds: float) -> str:
        """The startup line, or "" if the process ended first (its stderr says why)."""
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=seconds):
                raise AssertionError(f"no startup line in {seconds}s")
        return self.process.stdout.readline()

    @property
    def url(self) -> str:
        found = LISTENING.match(self.line)
        assert found, f"not a startup line: {self.line!r} (stderr: {self.stop()})"
        return found.group(1)

    def stop(self) -> str:
        """SIGTERM, then what the process wrote to stderr."""
        if self.process.poll() is None:
            self.process.terminate()
        _, self.err = self.process.communicate(timeout=15)
        return self.err


@pytest.fixture
def simulators() -> Iterator[list[Simulator]]:
    started: list[Simulator] = []
    yield started
    for simulator in started:
        simulator.stop()


def answers_like_vod(url: str) -> bool:
    """An unsigned call gets VOD's error body: the simulator is up and it is VOD's API."""
    body = httpx.post(url + "/", params={"Action": "ListAIJob"}, timeout=5).json()
    return bool(body.get("RequestId")) and body.get("Code") == "MissingParameter"


def test_startup_line(simulators: list[Simulator]) -> None:
    simulator = Simulator(
        *["--port", "0", "--seed", "1", "--drop-rate", "0.2"],
        *["--callback-url", "http://127.0.0.1:10399/callbacks/vod"],
        env={"TRACKER_CALLBACK_AUTH_KEY": f"{KEY},OlderKey1"},
    )
    simulators.append(simulator)
    line = simulator.line
    assert line.startswith("fake VOD listening on http://127.0.0.1:")
    assert answers_like_vod(simulator.url)
    assert "callbacks to http://127.0.0.1:10399/callbacks/vod (signed with the AuthKey)" in line
    assert "drop_rate=0.2" in line
    assert "seed 1" in line
    err = simulator.stop()
    assert SECRET not in line + err
    assert KEY not in line + err
    assert simulator.process.returncode == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [("--drop-rate", "2"), ("--fail-rate", "-0.1"), ("--qps", "0")],
)
def test_options_are_validated(option: str, value: str) -> None:
    result = CliRunner().invoke(
        main, ["fake-vod", "--access-key-id", AK, "--access-key-secret", SECRET, option, value]
    )
    assert result.exit_code == 2
    assert option in result.output


def test_every_fault_is_an_option() -> None:
    """The options come from `Faults`: one flag per field, with its help; the exact counts for
    demos are not flags."""
    from dataclasses import fields

    from tracker.fakevod import Faults
    from tracker.fakevod.faults import options

    result = CliRunner().invoke(main, ["fake-vod", "--help"], terminal_width=400)
    assert result.exit_code == 0
    flags = {f.name for f in options()}
    assert flags == {f.name for f in fields(Faults)} - {
        "drop_next",
        "stuck_next",
        "lose_submit_next",
    }
    for field in options():
        assert "--" + field.name.replace("_", "-") in result.output, field.name
        assert field.metadata["help"] in " ".join(result.output.split()), field.name
    assert "--drop-next" not in result.output


def test_command_line_needs_a_key_pair() -> None:
    result = CliRunner().invoke(
        main,
        ["fake-vod"],
        env={"ALIBABA_CLOUD_ACCESS_KEY_ID": "", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ""},
    )
    assert result.exit_code == 1
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in result.output
