"""A local stand-in for ApsaraVideo VOD: signed RPC API, simulated AI jobs, callbacks, faults.

Held to ../shared/vod-reference.md: it verifies requests the way the gateway does (section 4),
answers with VOD's bodies and error shapes (sections 1-3) and delivers events like VOD (section 6).
"""

from tracker.fakevod.gateway import Gateway, Refused
from tracker.fakevod.jobs import Delivery, FakeJob
from tracker.fakevod.mns import FakeMns
from tracker.fakevod.server import FakeVod, run_fake_vod

__all__ = ["Delivery", "FakeJob", "FakeMns", "FakeVod", "Gateway", "Refused", "run_fake_vod"]
