"""SQLite: WAL checkpoints off the writer's path.

SQLite copies its write-ahead log back into the database file (a checkpoint) inside whichever
commit takes the log past 1,000 pages, and that commit waits for the copy and its fsyncs: a
callback's answer, or a chunk of the stale sweep, pays for the writes of everyone before it.
Here a thread of the process does it on a connection of its own, a moment after others commit.
Writers keep SQLite's own checkpoint past BACKSTOP_PAGES only, should the thread fall behind.
A passive checkpoint never waits for a writer or a reader, and none waits for it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

EVERY = 0.05  # seconds between looks at whether another connection committed
BACKSTOP_PAGES = 10_000  # a writer checkpoints itself past this much log (40 MB of 4 KB pages)
BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Checkpointer:
    """A thread that checkpoints the SQLite file at `path` after other connections commit.

    It opens the file only while it exists (never creating it) and follows it when it is
    replaced, as the engines do (`tracker.db._follow_file`)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoints", daemon=True)
        self._opened: tuple[int, int] | None = None  # the identity of the file connected to
        self._seen: int | None = None  # its data_version at the last look
        # The last checkpoint's (busy, frames in the log, frames copied back); for tests.
        self.last: tuple[int, int, int] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(EVERY):
            try:
                conn = self._follow(conn)
                if conn is not None:
                    self._look(conn)
            except sqlite3.Error as exc:
                if getattr(exc, "sqlite_errorcode", None) in BUSY:
                    continue  # another process's checkpoint under way: the same work
                # Writers' backstop checkpoints meanwhile; the next look connects again.
                log.warning("WAL checkpoint of %s failed", self._path, exc_info=True)
                _close(conn)
                conn = None
        _close(conn)

    def _follow(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """A connection to the file now at the path (None while there is none)."""
        found = file_id(self._path)
        if conn is not None and found == self._opened:
            return conn
        _close(conn)
        self._opened, self._seen = found, None
        return None if found is None else _connect(self._path)

    def _look(self, conn: sqlite3.Connection) -> None:
        """Checkpoint if another connection committed since the last look."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._seen:
            self._seen = version
            self.last = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def _close(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    # mode=rw: a file deleted meanwhile is an error, not a new empty database.
    uri = f"{path.resolve().as_uri()}?mode=rw"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=True)


def file_id(path: Path) -> tuple[int, int] | None:
    """The identity of the file at `path` (device, inode); None when there is none."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino
