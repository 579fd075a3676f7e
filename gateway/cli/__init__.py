"""``gateway``: the CLI. Exit codes: 0 ok, 1 failure, 2 usage (argparse).

Commands (design §5): init, serve, tenants, provider-keys, virtual-keys, logs. Secrets
(XKS credential secrets, provider API keys) are read from stdin, never from arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway.errors import GatewayError
from gateway.master_key import MasterKeyError


def build_parser() -> argparse.ArgumentParser:
    from gateway.cli import admin_cmd, logs_cmd, serve_cmd

    parser = argparse.ArgumentParser(prog="gateway", description="AI gateway (BYOK, CMK)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve_cmd, admin_cmd, logs_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except GatewayError as exc:
        print(f"gateway: error: {exc.message}", file=sys.stderr)
        return 1
    except MasterKeyError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a stack trace (or a secret in one) to the terminal
        print(f"gateway: internal error ({type(exc).__name__})", file=sys.stderr)
        return 1
