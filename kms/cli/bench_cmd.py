"""``kms bench [--quick] [--json OUT]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kms.cli.main import command


def register(sub: Any, json_flag: Any) -> None:
    p = command(sub, "bench", _bench,
                "measure XKS, envelope, audit and revocation side by side with the peers")
    p.add_argument("--quick", action="store_true", help="the short run (under 2 minutes)")
    p.add_argument("--json", metavar="OUT", help="write the result object to OUT")


def _bench(args: argparse.Namespace) -> int:
    from kms.bench.runner import log_stderr, run, table

    result = run(args.quick, log_stderr)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0
