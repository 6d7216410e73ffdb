"""`tracker fake-vod`: its options, its startup line, and the ports it takes (free ones only)."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from tracker.cli import main
from tracker.config import Settings
from tracker.vod import MediaInfos, VodClient, get_video_infos

AK, SECRET, KEY = "LTAIsimulator", "SimulatorSecret", "CallbackKey123"
LISTENING = re.compile(r"^fake VOD listening on (http://\S+) ")
MNS_AT = re.compile(r"MNS queue API on (http://\S+);")


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

    @property
    def mns_url(self) -> str | None:
        found = MNS_AT.search(self.line)
        return found.group(1) if found else None

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


def answers_like_mns(url: str) -> bool:
    """An unsigned queue call gets MNS's XML error: the queue API listens there."""
    answer = httpx.get(url + "/queues/q", timeout=5)
    return answer.status_code == 400 and "MissingAuthorizationHeader" in answer.text


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


def test_media_durations_and_missing_media_from_the_command_line(
    simulators: list[Simulator],
) -> None:
    simulator = Simulator(
        "--port", "0", "--seed", "3", "--duration", "600", "--missing-media-rate", "0.5"
    )
    simulators.append(simulator)
    assert "missing_media_rate=0.5" in simulator.line
    assert "duration=600.0" in simulator.line
    settings = Settings(
        access_key_id=AK, access_key_secret=SecretStr(SECRET), vod_endpoint=simulator.url
    )

    async def ask() -> MediaInfos:
        async with VodClient(settings) as vod:
            return await get_video_infos(vod, [f"m{n}" for n in range(20)])

    infos = asyncio.run(ask())
    assert {info.duration_s for info in infos.found.values()} == {600.0}
    assert 0 < len(infos.missing) < 20
    assert len(infos.found) + len(infos.missing) == 20


def test_two_simulators_side_by_side_take_no_mns_port(simulators: list[Simulator]) -> None:
    """MNS is served only when asked: a second simulator on the machine starts too (issue 23, F1:
    both once took port 9001 for a queue API nobody asked for, and the second one died)."""
    simulators += [Simulator("--port", "0"), Simulator("--port", "0")]
    assert all(answers_like_vod(simulator.url) for simulator in simulators)
    for simulator in simulators:
        assert "MNS" not in simulator.line
        assert simulator.mns_url is None
    assert simulators[0].url != simulators[1].url


@pytest.mark.parametrize("asked", [["--mns-queue", "vod-events"], ["--mns-port", "0"]])
def test_mns_on_a_free_port_when_asked(simulators: list[Simulator], asked: list[str]) -> None:
    simulators += [Simulator("--port", "0", *asked), Simulator("--port", "0", *asked)]
    urls = []
    for simulator in simulators:
        assert answers_like_vod(simulator.url), simulator.line
        mns_url = simulator.mns_url
        assert mns_url is not None, simulator.line
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", mns_url)
        assert answers_like_mns(mns_url)
        urls.append(mns_url)
    assert urls[0] != urls[1]
    if "--mns-queue" in asked:
        assert f"callbacks to MNS queue vod-events at {urls[0]}" in simulators[0].line


def test_a_taken_port_is_one_line_not_a_traceback(simulators: list[Simulator]) -> None:
    first = Simulator("--port", "0")
    simulators.append(first)
    port = first.url.rsplit(":", 1)[1]
    second = Simulator("--port", port)
    simulators.append(second)
    deadline = time.monotonic() + 15
    while second.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert second.line == ""
    err = second.stop()
    assert second.process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
    assert answers_like_vod(first.url)  # the first one is untouched


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--drop-rate", "2"),
        ("--fail-rate", "-0.1"),
        ("--qps", "0"),
        ("--mns-port", "70000"),
        ("--duration", "-1"),
        ("--missing-media-rate", "1.5"),
    ],
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
        "submit_error_next",
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
