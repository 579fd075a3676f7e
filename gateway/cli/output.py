"""Printing and secret input for the CLI."""

from __future__ import annotations

import getpass
import json
import sys
from typing import Any

from gateway.errors import InvalidRequestError


def emit(args: Any, data: object, text: str) -> None:
    """``--json``: one JSON object; otherwise ``text``."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None, sort_keys=True, default=str))
    else:
        print(text)


def read_secret(prompt: str) -> str:
    """A secret from stdin (a terminal: without echo)."""
    value = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.read()
    value = value.strip()
    if not value:
        raise InvalidRequestError("expected the secret on stdin")
    return value
