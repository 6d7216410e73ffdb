"""docker-compose.yml only sets real settings and only runs commands the CLI has.

Docker cannot run here, so the file is checked by parsing it against the code it drives.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from tracker.cli import main
from tracker.config import Settings, env_name

COMPOSE = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
SETTING_NAMES = {env_name(field) for field in Settings.model_fields}


def tracker_services() -> list[str]:
    return [name for name, svc in SERVICES.items() if svc.get("build")]


def test_the_stack_has_postgres_with_a_health_check_and_a_volume() -> None:
    postgres = SERVICES["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.split(":")[0] in COMPOSE["volumes"] for v in postgres["volumes"])
    assert "simulator" in SERVICES["fake-vod"]["profiles"]


@pytest.mark.parametrize("service", tracker_services())
def test_every_tracker_variable_is_a_real_setting(service: str) -> None:
    names = set(SERVICES[service].get("environment", {}))
    unknown = {n for n in names if n.startswith(("TRACKER_", "ALIBABA_CLOUD_"))} - SETTING_NAMES
    assert not unknown, f"{service} sets variables the tracker does not read: {unknown}"


@pytest.mark.parametrize("service", tracker_services())
def test_every_command_exists_in_the_cli(service: str) -> None:
    args = [re.sub(r"\$\{[^}]*\}", "x", str(a)) for a in SERVICES[service]["command"]]
    assert args[0] == "tracker"
    command: click.Command = main
    rest = args[1:]
    while isinstance(command, click.Group) and rest:
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"{service}: no command {rest[0]!r} in `tracker`"
        command, rest = sub, rest[1:]
    assert not isinstance(command, click.Group), f"{service}: incomplete command {args}"
    command.make_context(command.name or "", list(rest))  # raises on unknown options
