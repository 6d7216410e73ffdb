"""`tracker demo --sts-ttl`: the demo signs with the simulator's rotating STS credentials."""

from __future__ import annotations

import re
from pathlib import Path

from tests.processes import run_tracker


def test_demo_with_rotating_sts_credentials(tmp_path: Path) -> None:
    # A profile of the user's comes before a credentials URI in the chain: the demo must not
    # use it (its key pair is unknown to the simulator, so every request would be refused).
    profile = tmp_path / "credentials.ini"
    profile.write_text(
        "[default]\ntype = access_key\naccess_key_id = mine\naccess_key_secret = s\n"
    )
    env = {"TMPDIR": str(tmp_path), "ALIBABA_CLOUD_CREDENTIALS_FILE": str(profile)}
    done = run_tracker("demo", "--exit-when-done", "--sts-ttl", "3s", env=env, timeout=90)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "all 8 jobs match VOD's truth (1 failed, 7 succeeded)" in out
    assert re.search(r"credentials: STS from http://127\.0\.0\.1:\d+/credentials", out)
    used = re.search(r"credentials: (\d+) STS credentials handed out, (\d+) requests signed", out)
    assert used is not None
    # About 15 s of 3 s credentials renewed with a second to spare: several rotations.
    assert int(used[1]) >= 3
    assert int(used[2]) >= 8
