"""Readiness means "a callback can be stored now"; details only for the API's callers.

The SQLite cases use a file of their own whatever TRACKER_TEST_DATABASE_URL says: deleting the
file under a running server, or opening it read-only, is a SQLite matter.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import text

from tracker.app import create_app
from tracker.config import Settings
from tracker.db import Database, upgrade

EVENT = {
    "EventTime": "2026-01-02T03:04:05Z",
    "EventType": "AIVideoTagComplete",
    "JobId": "0123456789abcdef0123456789abcdef",
    "MediaId": "fedcba9876543210fedcba9876543210",
    "Status": "success",
    "Code": "0",
    "Message": "OK",
    "Data": "{}",
}


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield http


async def sqlite_file(tmp_path: Path) -> Path:
    """A database at head, in WAL mode as the tracker leaves it."""
    path = tmp_path / "tracker.db"
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{path}")
    database = Database(f"sqlite+aiosqlite:///{path}")
    await database.revision()  # the first connection switches the file to WAL
    await database.dispose()
    return path


def remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def callback(n: int) -> dict[str, str]:
    return {**EVENT, "JobId": f"{n:032x}"}


async def test_a_deleted_database_file_is_not_ready_and_stores_no_callback(
    tmp_path: Path,
) -> None:
    path = await sqlite_file(tmp_path)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{path}", scheduler="off")
    async with serving(settings) as http:
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.post("/callbacks/vod", json=callback(1))).status_code == 200

        remove(path, Path(f"{path}-wal"), Path(f"{path}-shm"))

        ready = await http.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "unavailable"
        stored = await http.post("/callbacks/vod", json=callback(2))
        assert stored.status_code == 503, stored.text
        assert not path.exists()  # not silently re-created empty


async def test_a_replaced_database_file_is_followed(tmp_path: Path) -> None:
    """A file restored from a backup (a new inode at the same path) is what gets written."""
    path = await sqlite_file(tmp_path)
    (tmp_path / "spare").mkdir()
    spare = await sqlite_file(tmp_path / "spare")
    settings = Settings(database_url=f"sqlite+aiosqlite:///{path}", scheduler="off")
    async with serving(settings) as http:
        assert (await http.post("/callbacks/vod", json=callback(1))).status_code == 200
        remove(Path(f"{path}-wal"), Path(f"{path}-shm"))
        os.replace(spare, path)
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.post("/callbacks/vod", json=callback(2))).status_code == 200
    database = Database(f"sqlite+aiosqlite:///{path}")
    async with database.session() as session:
        stored = (await session.execute(text("SELECT job_id FROM callback_events"))).scalars()
        assert list(stored) == [f"{2:032x}"]
    await database.dispose()


async def test_a_read_only_database_is_not_ready(tmp_path: Path) -> None:
    path = await sqlite_file(tmp_path)
    read_only = f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"
    async with serving(Settings(database_url=read_only, scheduler="off")) as http:
        assert (await http.get("/jobs")).status_code == 200  # it can still be read
        stored = await http.post("/callbacks/vod", json=callback(1))
        assert stored.status_code == 503
        ready = await http.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert "write" in ready.json()["reason"]


async def test_readiness_shows_who_runs_the_scheduler_only_with_a_token(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, scheduler="off", api_tokens="t0ken")  # type: ignore[arg-type]
    async with serving(settings) as http:
        anonymous = await http.get("/readyz")
        assert anonymous.status_code == 200
        assert anonymous.json()["scheduler"] == {"status": anonymous.json()["scheduler"]["status"]}
        authorized = await http.get("/readyz", headers={"Authorization": "Bearer t0ken"})
        assert authorized.status_code == 200
        assert "jobs" in authorized.json()["scheduler"]
        assert "in_process" in authorized.json()["scheduler"]
        assert json.dumps(anonymous.json()).count("owner") == 0
