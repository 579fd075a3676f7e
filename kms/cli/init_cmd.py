"""``kms init``."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from kms.cli.main import command
from kms.cli.output import emit
from kms.settings import Settings


def register(sub: Any, json_flag: Any) -> None:
    p = command(sub, "init", _init, "create the token, keys, database and store 'default'",
                json_flag)
    p.add_argument("--uri-prefix", help="XKS URI path prefix of store 'default' (default: xks)")


def _init(args: argparse.Namespace) -> int:
    from kms.bootstrap import run_init  # not to build the parser: `kms serve` starts sooner

    report = run_init(Settings.from_env(), args.uri_prefix)
    emit(args, asdict(report),
         f"initialized {report.home}\n"
         f"  database:   {report.database_url}\n"
         f"  token:      {report.token_label} ({report.softhsm_conf})\n"
         f"  key store:  {report.store} at /{report.uri_prefix}/kms/xks/v1")
    return 0
