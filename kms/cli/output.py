"""How commands print: a JSON object with ``--json``, short readable text otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def emit(args: Any, data: Mapping[str, Any] | Sequence[Any], text: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


def key_line(k: Mapping[str, Any]) -> str:
    usage = ",".join(k["usage"]) or "-"
    return f"{k['keyId']:<32} {k['state']:<17} v{k['primaryVersion']:<3} {usage:<16} {k['store']}"
