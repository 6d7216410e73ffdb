"""The VOD simulator (core): a local ApsaraVideo VOD with its MNS queues, for tests and demos.

Held to ../shared/vod-reference.md: it verifies requests the way the gateway does (section 4),
answers with VOD's bodies and error shapes (sections 1-3) and delivers events like VOD (section 6).
`server` holds the HTTP actions, `engine` runs the jobs, `callbacks` delivers their events,
`faults` declares what goes wrong; `mns` is MNS's queue API over the model in `queues`.
"""

from tracker.fakevod.faults import Faults
from tracker.fakevod.gateway import Gateway, Refused
from tracker.fakevod.jobs import Delivery, FakeJob
from tracker.fakevod.listen import CannotListen
from tracker.fakevod.media import FakeMedia, MediaLibrary
from tracker.fakevod.mns import FakeMns
from tracker.fakevod.server import FakeVod

__all__ = [
    "CannotListen",
    "Delivery",
    "FakeJob",
    "FakeMedia",
    "FakeMns",
    "FakeVod",
    "Faults",
    "Gateway",
    "MediaLibrary",
    "Refused",
]
