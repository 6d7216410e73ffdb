"""`tracker demo --channel mns`: the same demo, VOD's events through the simulated MNS queue."""

from __future__ import annotations

import re
from pathlib import Path

from tests.processes import run_tracker


def test_demo_through_the_mns_queue_runs_every_job_to_its_true_state(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    done = run_tracker("demo", "--exit-when-done", "--channel", "mns", env=env, timeout=90)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"events channel: MNS: VOD writes its events to the simulated queue", out)
    assert "all 8 jobs match VOD's truth (1 failed, 7 succeeded)" in out
    assert len(re.findall(r"queue event lost: found by reconciliation", out)) == 1
    assert len(re.findall(r"queue event, confirmed by ListAIJob", out)) >= 6
    # 7 of the 8 events were written (one is dropped by the simulator), consumed and deleted.
    assert (
        "7 events came through the MNS queue tracker-demo-events, each deleted once stored; "
        "0 left in it"
    ) in out
