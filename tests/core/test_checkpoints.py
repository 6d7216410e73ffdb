"""SQLite's write-ahead log is copied back by the Database's own thread, not inside a commit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sqlalchemy import text

from tracker.checkpoints import BACKSTOP_PAGES, EVERY, file_id
from tracker.db import Database, upgrade


async def _write(database: Database, count: int) -> None:
    for n in range(count):
        async with database.write() as session:
            await session.execute(
                text("INSERT INTO heartbeats (name, owner, started_at) VALUES (:n, 't', '2026')"),
                {"n": f"h{n}"},
            )


def _restore(backup: Path, path: Path) -> None:
    """Put `backup` at `path`, as a restore does: the old log goes, a new inode comes."""
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(backup, path)


async def _backfilled(database: Database) -> tuple[int, int, int]:
    """The checkpointer's last result, once it has copied every frame of the log back."""
    checkpointer = database.checkpointer
    assert checkpointer is not None
    for _ in range(500):
        last = checkpointer.last
        if last is not None and last[1] > 0 and last[1] == last[2]:
            return last
        await asyncio.sleep(0.01)
    raise AssertionError(f"the log was not copied back: {checkpointer.last}")


async def test_commits_leave_the_checkpoint_to_the_thread(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tracker.db'}"
    await asyncio.to_thread(upgrade, url)
    database = Database(url)
    try:
        async with database.writer.connect() as conn:
            pages = await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")
            assert pages.scalar_one() == BACKSTOP_PAGES  # a commit checkpoints only past this
        await _write(database, 5)
        busy, frames, copied = await _backfilled(database)
        assert busy == 0
        assert frames == copied > 0
    finally:
        await database.dispose()
    assert database.checkpointer is not None
    assert not database.checkpointer._thread.is_alive()


async def test_a_missing_file_is_waited_for_never_created(tmp_path: Path) -> None:
    path = tmp_path / "tracker.db"
    url = f"sqlite+aiosqlite:///{path}"
    database = Database(url)
    try:
        await asyncio.sleep(EVERY * 4)
        assert not path.exists()
        await asyncio.to_thread(upgrade, url)
        await _write(database, 2)
        await _backfilled(database)
    finally:
        await database.dispose()


async def test_a_replaced_file_is_followed(tmp_path: Path) -> None:
    """A file restored from a backup (a new inode at the same path) is the one checkpointed."""
    path = tmp_path / "tracker.db"
    spare = tmp_path / "spare.db"
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{path}")
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{spare}")
    database = Database(f"sqlite+aiosqlite:///{path}")
    checkpointer = database.checkpointer
    assert checkpointer is not None
    try:
        await _write(database, 2)
        await _backfilled(database)
        _restore(spare, path)
        checkpointer.last = None
        await _write(database, 3)  # the engines follow the new file; so must the thread
        await _backfilled(database)
        assert checkpointer._opened == file_id(path)
    finally:
        await database.dispose()
