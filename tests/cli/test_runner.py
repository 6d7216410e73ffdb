"""The commands that work on the database directly share one runner: a database they cannot use
ends them with one line naming TRACKER_DATABASE_URL, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracker.cli import main

COMMANDS = [
    ("jobs", "list"),
    ("jobs", "show", "some-job"),
    ("subscriptions", "list"),
    ("subscriptions", "remove", "1"),
    ("subscriptions", "deliveries", "1"),
    ("changes", "tail", "--after", "0", "--once"),
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_database_without_the_schema_is_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()  # an empty SQLite database: no tables
    url = f"sqlite+aiosqlite:///{empty}"
    result = CliRunner().invoke(main, args, env={"TRACKER_DATABASE_URL": url})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: TRACKER_DATABASE_URL: database error:")
    assert "no such table" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args", COMMANDS[::2], ids=lambda a: " ".join(a[:2]))
def test_an_unreachable_server_is_one_line(args: tuple[str, ...]) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/nothing"
    result = CliRunner().invoke(main, args, env={"TRACKER_DATABASE_URL": url})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: TRACKER_DATABASE_URL: database error:")
    assert len(result.output.strip().splitlines()) == 1
