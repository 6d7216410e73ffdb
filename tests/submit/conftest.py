"""Fixtures of the submitter's tests: a simulator that can refuse and throttle, and a client of it.

They stand in for the suite's `fake_vod` and `vod` here; tests/submit/simulator.py has the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.submit.simulator import KEY, SECRET, RefusingVod, vod_settings
from tracker.fakevod import FakeVod, Faults
from tracker.vod import VodClient


@pytest.fixture
async def fake() -> AsyncIterator[RefusingVod]:
    simulator = RefusingVod(
        access_key_id=KEY, access_key_secret=SECRET, seed=4, faults=Faults(delay=0.2)
    )
    simulator.refuse = set()
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def vod(database_url: str, fake: FakeVod) -> AsyncIterator[VodClient]:
    async with VodClient(vod_settings(database_url, fake.url)) as client:
        yield client
