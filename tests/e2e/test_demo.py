"""`tracker demo --exit-when-done` as a user runs it: a real subprocess, no terminal."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.processes import run_tracker


def test_demo_runs_every_job_to_its_true_state_and_exits_0(tmp_path: Path) -> None:
    # A TRACKER_* variable of the user's must not change what the demo does.
    env = {
        "TRACKER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/not-this.db",
        "TMPDIR": str(tmp_path),
    }
    done = run_tracker("demo", "--exit-when-done", env=env, timeout=90)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    assert "all 8 jobs match VOD's truth (1 failed, 7 succeeded)" in out
    # Every outcome was pushed to the demo's receiver and verified with standardwebhooks.
    assert (
        "webhooks: 8 of 8 outcomes delivered and verified with standardwebhooks (0 refused)" in out
    )
    # One line per change of state, as the jobs move: the dropped callback's job is found by
    # reconciliation, the stuck one is flagged stale and later finishes.
    assert len(re.findall(r"POST /jobs demo-video-\d", out)) == 4
    assert len(re.findall(r"callback lost: found by reconciliation", out)) == 1
    stale = re.findall(r"demo-video-3 AIVideoTag (\w{8})\s+stale\s", out)
    assert len(stale) == 1
    assert re.search(rf"demo-video-3 AIVideoTag {stale[0]}\s+succeeded .*was stale", out)
    assert re.search(r"demo-video-4 AIMediaDNA \w{8}\s+failed\s", out)
    assert "\x1b[" not in out  # plain lines without a terminal

    # The status API's answer for the stale job, over HTTP with the generated token.
    curl = re.search(r"\$ curl -H \"Authorization: Bearer \S+\" (http://127\.0\.0\.1:\d+)", out)
    assert curl is not None
    answer = json.loads(out[out.index("{", curl.end()) : out.index("\n}\n", curl.end()) + 2])
    assert answer["job_id"].startswith(stale[0])
    assert (answer["state"], answer["stale"], answer["status"]) == ("succeeded", False, "success")
    assert answer["stale_at"] is not None
    assert answer["result"]["Keyword"]
    assert f"console: {curl[1]}/ui/  (sign in with the API token " in out

    # Its SQLite file lived in a temp directory, removed at exit; the user's was not touched.
    database = re.search(r"SQLite at (\S+),", out)
    assert database is not None
    assert not Path(database[1]).exists()
    assert not (tmp_path / "not-this.db").exists()


def test_demo_timeout_exits_non_zero_and_says_what_is_missing(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    done = run_tracker("demo", "--exit-when-done", "--timeout", "1", env=env, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "demo failed: not done after 1s:" in done.stdout
    assert re.search(r"\w{8} still (init|processing) at VOD", done.stdout)
    kept = re.search(r"logs kept in (\S+)", done.stdout)
    assert kept is not None
    assert Path(kept[1]).parent.parent == tmp_path  # left for the user to read


@pytest.mark.slow
def test_demo_on_a_terminal_shows_a_live_table(tmp_path: Path) -> None:
    """The README's first command as a person sees it: stdout on a pseudo-terminal."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "tracker", "demo", "--exit-when-done"],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TMPDIR": str(tmp_path), "TERM": "xterm"},
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the demo exited and closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    raw = b"".join(chunks).decode(errors="replace")
    assert code == 0, raw
    assert "\x1b[" in raw  # drawn and redrawn in place, not printed line by line
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert "POST /jobs" not in text
    last = text[text.rindex("tracker demo") :]
    assert re.search(r"what happened", last)
    assert len(re.findall(r"demo-video-\d\s+(tag|dna) \w{8}\s+(succeeded|failed)", last)) == 8
    assert re.search(
        r"tag \w{8}\s+succeeded\s+success\s+callback lost: found by reconciliation", last
    )
    assert re.search(r"was stale", last)
    assert "all 8 jobs match VOD's truth" in text
