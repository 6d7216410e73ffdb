"""A NUL byte in a change-feed filter is a 400 naming the parameter, never a 500: PostgreSQL's
text cannot hold one, and the driver raises if it reaches it (issue 23, F2)."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import add_job
from tracker.db import Database


@pytest.mark.parametrize("path", ["/changes", "/changes/stream"])
async def test_a_media_id_with_a_nul_byte_is_a_bad_request(
    client: httpx.AsyncClient, database: Database, path: str
) -> None:
    await add_job(database, "j1", media_id="m1")
    answer = await client.get(path, params={"after": 0, "media_id": "m\x001"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "bad_request"
    assert "media_id" in answer.json()["message"]
    assert "NUL" in answer.json()["message"]
    fine = await client.get("/changes", params={"after": 0, "media_id": "m1"})
    assert fine.status_code == 200
    assert [c["data"]["media_id"] for c in fine.json()["items"]] == ["m1"]
