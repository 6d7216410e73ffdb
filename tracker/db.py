"""Engines, sessions and schema revisions for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    FromClause,
    Text,
    bindparam,
    cast,
    column,
    event,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeEngine

from tracker.checkpoints import BACKSTOP_PAGES, Checkpointer, file_id

ROOT = Path(__file__).resolve().parent.parent
BUSY_TIMEOUT_MS = 10_000


class Database:
    """The engines and session factories of one process.

    On SQLite there are two engines over one file: readers (deferred BEGIN, WAL lets them run
    beside the writer) and a single writer connection that takes the lock up front with
    BEGIN IMMEDIATE, so read-then-write work never deadlocks into SQLITE_BUSY, and a thread
    that copies the write-ahead log back into the file (`Checkpointer`), so no commit waits for
    that. On PostgreSQL both names point at one pooled engine.
    """

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 20) -> None:
        self.url = make_url(url)
        self.is_sqlite = is_sqlite(url)
        self.checkpointer: Checkpointer | None = None
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, sqlite_synchronous, immediate=False)
            self.writer = _sqlite_engine(url, sqlite_synchronous, immediate=True, pool_size=1)
            path = sqlite_file(url)
            if path is not None:
                self.checkpointer = Checkpointer(path)
                self.checkpointer.start()
        else:
            self.engine = create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                json_deserializer=read_json,
            )
            self.writer = self.engine
        self.reads = async_sessionmaker(self.engine, expire_on_commit=False)
        self.writes = async_sessionmaker(self.writer, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A read-mostly unit of work; commits on success."""
        async with self.reads() as session, session.begin():
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A unit of work that writes; commits once on success, rolls back on error."""
        async with self.writes() as session, session.begin():
            yield session

    async def revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await current_revision(conn)

    async def check_writable(self) -> None:
        """Raise unless a write could be committed now: the writer takes the write lock (SQLite:
        BEGIN IMMEDIATE) and updates a row without changing it, then rolls back. Fails on a
        read-only or deleted file, a read-only PostgreSQL, or a lock held too long elsewhere."""
        async with self.writer.connect() as conn:
            transaction = await conn.begin()
            try:
                await conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            finally:
                await transaction.rollback()

    async def dispose(self) -> None:
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)
        await self.engine.dispose()
        if self.writer is not self.engine:
            await self.writer.dispose()


# The deepest JSON the tracker takes in (a callback's body and result, VOD's answers): deeper is
# kept as its text. VOD's results nest about four levels; Python's parser and encoder recurse
# once per level, so a value a thousand levels deep fails wherever the stack is already deep.
MAX_JSON_DEPTH = 64
# What `read_json` hands back whole: a result at MAX_JSON_DEPTH inside a change's snapshot (two
# levels more) reads as it was stored.
READ_JSON_DEPTH = 2 * MAX_JSON_DEPTH
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_PAIRS = re.compile(r"\[\]|\{\}")
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON `text` nests containers deeper than `limit` levels. Counted without
    parsing (so without recursion) and at C speed: strings out, then each pass takes away the
    innermost pairs of brackets, so a result a few levels deep costs a few passes."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", _outside_strings(text))
    for _ in range(limit):
        inner = _PAIRS.sub("", brackets)  # one scan: the pairs innermost now, not what they bare
        if not inner:
            return False
        brackets = inner
    return True


def _outside_strings(text: str) -> str:
    """What of valid JSON `text` lies outside its strings. Escaped backslashes, then escaped
    quotes go first; every quote left opens or closes a string (faster than a regex per string)."""
    bare = text.replace("\\\\", "").replace('\\"', "")
    return "".join(bare.split('"')[::2])


def read_json(text: str) -> Any:
    """A stored JSON value as any reader can pass it on: NaN, Infinity and numbers beyond a
    double read as null. SQLite keeps them as text and PostgreSQL's numeric holds `1e999`, but
    no JSON response can carry them (Starlette's JSONResponse raises). The receiver refuses
    them; rows written before it did, or by a path that missed them, must not break a read.
    PostgreSQL writes `1e5000` out as 5,001 digits, past what Python reads as an int: null too.
    A value nested deeper than READ_JSON_DEPTH keeps its outer level, and each member too deep
    to render is read as its JSON text (the receiver keeps such results as text from the start;
    this is for rows it stored before, or anything that missed the bound)."""
    if too_deep(text, READ_JSON_DEPTH):
        text = _members_as_text(text, READ_JSON_DEPTH)
    try:
        return _READ.decode(text)
    except ValueError:  # only the integer digits limit: the database holds valid JSON
        return _READ_BIG_INTS.decode(text)


def _members_as_text(text: str, limit: int) -> str:
    """`text` with each member of its outermost container (or the whole value, if a member is
    not where the depth lies) that nests `limit` levels or more replaced by a JSON string of
    its text. A loop over the brackets with an explicit stack: no recursion."""
    spans: list[tuple[int, int]] = []
    depth = deepest = start = 0
    for token in _TOKENS.finditer(text):
        char = token.group()[0]
        if char == '"':
            continue
        if char in "[{":
            depth += 1
            if depth == 2:
                start, deepest = token.start(), 2
            deepest = max(deepest, depth)
        else:
            if depth == 2 and deepest - 1 >= limit:
                spans.append((start, token.end()))
            depth -= 1
    if not spans:
        return json.dumps(text)  # the outermost level alone is too deep: all of it as text
    pieces, done = [], 0
    for begin, end in spans:
        pieces += [text[done:begin], json.dumps(text[begin:end])]
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


def _null(_constant: str) -> None:
    return None


def _finite_or_null(literal: str) -> float | None:
    value = float(literal)
    return value if math.isfinite(value) else None


def _int_or_null(literal: str) -> int | None:
    try:
        return int(literal)
    except ValueError:
        return None


# read_json's decoders, made once (json.loads with hooks builds one per call).
_READ = json.JSONDecoder(parse_constant=_null, parse_float=_finite_or_null)
_READ_BIG_INTS = json.JSONDecoder(
    parse_constant=_null, parse_float=_finite_or_null, parse_int=_int_or_null
)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_engine(
    url: str, synchronous: str, *, immediate: bool, pool_size: int = 5
) -> AsyncEngine:
    # No ROLLBACK when a connection goes back to the pool: the driver is in autocommit (below) and
    # every transaction is one SQLAlchemy begins and ends, so that round trip to the driver's
    # thread did nothing but cost a tenth of a short write transaction.
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        json_deserializer=read_json,
        pool_reset_on_return=None,
    )
    path = sqlite_file(url)
    if path is not None:
        _follow_file(engine, path)

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN (below) start transactions, not the driver's implicit one.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # The busy timeout first: even `journal_mode` can meet a lock while others write.
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if path is not None:  # the Checkpointer copies the log back; this is its backstop
            cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None in memory, or for a `file:` URI (uri=true)."""
    parsed = make_url(url)
    if parsed.query.get("uri") in ("true", "1") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _follow_file(engine: AsyncEngine, path: Path) -> None:
    """Keep connections on the file at `path`, not on whatever they opened.

    An open SQLite connection keeps writing to its file after the file is deleted or replaced;
    every write then "succeeds" into a file nobody will ever open again. So a connection is
    checked against the path's identity when taken from the pool (and dropped if it differs),
    and a new one is never opened on a missing file, which SQLite would silently create empty:
    a missing database is an error to report, made by `tracker db upgrade`.
    """

    @event.listens_for(engine.sync_engine, "do_connect")
    def _refuse_missing(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        if file_id(path) is None:
            raise sqlite3.OperationalError(f"database file {path} does not exist")

    @event.listens_for(engine.sync_engine, "connect")
    def _remember(dbapi_conn: Any, record: Any) -> None:
        record.info["file_id"] = file_id(path)

    @event.listens_for(engine.sync_engine, "checkout")
    def _check(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if file_id(path) != record.info.get("file_id"):
            # The pool discards this connection and opens another (which _refuse_missing stops
            # if the file is gone).
            raise DisconnectionError(f"database file {path} was deleted or replaced")


async def current_revision(conn: AsyncConnection) -> str | None:
    return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if url:
        config.attributes["database_url"] = url
    return config


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(url: str) -> None:
    """Create or migrate the database to the head revision (runs its own event loop).

    A SQLite file is left in WAL mode, which the file keeps: otherwise the first connections of
    a starting service switch it while others already use it, and one of them can meet
    `database is locked` at once, without waiting out the busy timeout.
    """
    command.upgrade(alembic_config(url), "head")
    path = sqlite_file(url) if is_sqlite(url) else None
    if path is not None:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")


async def upgrade_async(url: str) -> None:
    await asyncio.to_thread(upgrade, url)


def json_rows(name: str, columns: Mapping[str, TypeEngine[Any]], dialect: str) -> FromClause:
    """A FROM clause of the rows sent as ONE JSON parameter `name` (an array of objects).

    One fixed statement whatever the number of rows, compiled once; the database unpacks the rows
    (`jsonb_to_recordset` on PostgreSQL, `json_each` on SQLite), which costs far less than binding
    and type-processing each row. Values must already be in the form the database stores: on
    SQLite, naive UTC times as `db_time` writes them, and JSON columns as their JSON text.
    """
    rows = bindparam(name, type_=Text())
    if dialect == "postgresql":
        return (
            func.jsonb_to_recordset(cast(rows, JSONB))
            .table_valued(*(column(key, type_) for key, type_ in columns.items()))
            .render_derived(name=name, with_types=True)
        )
    each = func.json_each(rows).table_valued("value")
    return select(
        *(
            func.json_extract(each.c.value, literal_column(f"'$.{key}'")).label(key)
            for key in columns
        )
    ).subquery(name)


def rows_json(rows: Iterable[Mapping[str, Any]]) -> str:
    """The value of a `json_rows` parameter: the rows as one compact JSON array of objects."""
    return json.dumps(list(rows), separators=(",", ":"))


def db_time(moment: datetime | None, dialect: str) -> str | None:
    """A time as `json_rows` expects it: ISO with offset, or SQLite's naive UTC text."""
    if moment is None:
        return None
    if dialect == "postgresql":
        return moment.isoformat()
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


def insert(where: AsyncSession | str, table: Any) -> Any:
    """INSERT with the dialect's ON CONFLICT clauses (PostgreSQL and SQLite spell them alike);
    `where` is the session, or the dialect's name."""
    dialect = where if isinstance(where, str) else where.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
