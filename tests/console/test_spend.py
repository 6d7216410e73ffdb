"""The overview's spend table: minutes of video reserved per UTC day and type, from the spend
guard's ledger (tracker/submit/budget.py), for the last SPEND_DAYS days."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx

from tracker.clock import FrozenClock
from tracker.console.overview import SPEND_DAYS
from tracker.db import Database
from tracker.submit.budget import Budget, reserve

TEN_MINUTES_MS = 600_000


async def test_the_overview_shows_spend_per_day_and_type(
    signed_in: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    now = clock()
    budget = Budget({"AIVideoTag": 3 * TEN_MINUTES_MS})
    days = {
        "today": now,
        "yesterday": now - timedelta(days=1),
        "too old": now - timedelta(days=SPEND_DAYS),
    }
    async with database.write() as session:
        for moment in days.values():
            wanted = [{"AIVideoTag": TEN_MINUTES_MS, "AIMediaDNA": TEN_MINUTES_MS}] * 2
            assert await reserve(session, budget, wanted, moment) == [None, None]
        # Today's third and fourth: one fits exactly (the budget runs out), one is refused.
        verdicts = await reserve(session, budget, [{"AIVideoTag": TEN_MINUTES_MS}] * 2, now)
        assert verdicts[0] is None
        assert verdicts[1] is not None

    page = (await signed_in.get("/ui/")).text
    today, yesterday, old = (moment.date().isoformat() for moment in days.values())

    def cells(day: str, job_type: str) -> list[str]:
        return row_cells(page, f"spend-{day}-{job_type}")

    assert cells(today, "AIVideoTag")[:5] == [today, "AIVideoTag", "30.0", "30.0", "3"]
    assert cells(today, "AIMediaDNA")[:5] == [today, "AIMediaDNA", "20.0", "none", "2"]
    assert cells(yesterday, "AIVideoTag")[:5] == [yesterday, "AIVideoTag", "20.0", "30.0", "2"]
    assert cells(today, "AIVideoTag")[5] != "no"  # it ran out today
    assert cells(yesterday, "AIVideoTag")[5] == "no"
    assert f"spend-{old}-" not in page  # older than the table's days
    order = [page.index(f'id="spend-{day}-AIMediaDNA"') for day in (today, yesterday)]
    assert order == sorted(order)  # newest day first


async def test_the_overview_says_when_nothing_was_spent(signed_in: httpx.AsyncClient) -> None:
    page = (await signed_in.get("/ui/")).text
    assert "Nothing submitted in these days." in page.split('id="spend-table"')[1]


def row_cells(page: str, row_id: str) -> list[str]:
    """The visible text of each cell of the table row with this id."""
    row = page.split(f'id="{row_id}"', 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]
