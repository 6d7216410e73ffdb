"""Programs from outside PyPI that some tests drive: found on this machine, or the test skips.

A skip names the Debian package to install. `.ci/run` sets TRACKER_TEST_PROGRAMS=required, which
turns each such skip into a failure, so CI always runs those tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Read when the tests are collected: conftest's `_clean_environment` removes every TRACKER_*
# variable before the first test runs, this one included.
REQUIRED = os.environ.get("TRACKER_TEST_PROGRAMS") == "required"


def missing(program: str, package: str) -> None:
    message = f"needs {program}: apt-get install {package}"
    if REQUIRED:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("Chromium", "chromium")
    assert found is not None
    return found


def postgres_bindir() -> Path:
    """The PostgreSQL server's binaries (pg_ctl, initdb), newest version first."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    initdb = str(found[-1]) if found else shutil.which("initdb")
    if initdb is None:
        missing("the PostgreSQL server", "postgresql")
    assert initdb is not None
    return Path(initdb).parent


def promtool() -> str:
    """Prometheus's rule checker and rule unit tester (Debian's `prometheus` package)."""
    found = shutil.which("promtool")
    if found is None:
        missing("promtool", "prometheus")
    assert found is not None
    return found
