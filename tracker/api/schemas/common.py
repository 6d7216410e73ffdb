"""HTTP: what the shapes' modules share."""

from __future__ import annotations

from typing import Any

from pydantic import WithJsonSchema


def enum(*values: str) -> Any:
    """A string the code writes from a fixed set (a plain `str` column, so not a Literal)."""
    return WithJsonSchema({"type": "string", "enum": list(values)})
