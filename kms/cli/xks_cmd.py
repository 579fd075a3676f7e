"""Placeholder registration (filled in by its issue)."""

from __future__ import annotations

from typing import Any


def register(sub: Any, json_flag: Any) -> None:
    return None
