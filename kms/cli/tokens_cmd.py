"""``kms tokens ...``: admin API bearer tokens (kms/tokens), through the shared service."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from kms.audit.event import cli_actor
from kms.cli.context import runtime
from kms.cli.main import command
from kms.cli.output import emit

if TYPE_CHECKING:
    from kms.runtime import Runtime
    from kms.tokens import TokenService

# kms.tokens.Role's values, spelt out so that `kms` does not import the service (and
# SQLAlchemy) to build its parser: `kms serve` starts sooner (tests/kms/test_cli_start.py).
ROLES = ("admin", "auditor")


def register(sub: Any, json_flag: Any) -> None:
    tokens = sub.add_parser("tokens", help="admin API bearer tokens").add_subparsers(
        dest="tokens_command", required=True, metavar="COMMAND")
    p = command(tokens, "create", _create,
                "create a token; it is printed once and stored only as a hash", json_flag)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--expires-in-days", type=int, metavar="N")
    command(tokens, "list", _list, "list tokens (never the tokens themselves)", json_flag)
    command(tokens, "revoke", _revoke, "revoke a token now", json_flag).add_argument("name")


def _service(rt: Runtime) -> TokenService:
    from kms.tokens import TokenService

    return TokenService(rt.engine, rt.audit, rt.clock)


def _create(args: argparse.Namespace) -> int:
    from kms.tokens import Role

    with runtime() as rt:
        info, token = _service(rt).create(args.name, Role(args.role), cli_actor(),
                                          expires_in_days=args.expires_in_days)
    expiry = f", expires {info.expires_at}" if info.expires_at else ", no expiry"
    emit(args, {"name": info.name, "role": info.role.value, "token": token,
                "expiresAt": info.expires_at},
         f"{token}\n")
    if not args.json:
        print(f"kms: token {info.name!r} ({info.role.value}{expiry}) is shown once above; "
              "store it now", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    with runtime() as rt:
        infos = _service(rt).list()
    lines = [f"{i.name:<32} {i.role.value:<8} "
             f"{'REVOKED' if i.revoked else 'active':<8} expires {i.expires_at or 'never'}"
             for i in infos]
    emit(args, {"tokens": [i.to_json() for i in infos]}, "\n".join(lines) or "(no tokens)")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with runtime() as rt:
        info = _service(rt).revoke(args.name, cli_actor())
    emit(args, info.to_json(), f"token {info.name} revoked")
    return 0
