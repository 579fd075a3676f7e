"""``kms``: the entry point. Exit codes: 0 ok, 1 failure, 2 usage (argparse), and for
``kms audit verify`` 0 valid, 1 invalid, 3 incomplete.

Every command that changes something goes through the same service layer as the admin API
(kms/keys/service.py), so the CLI holds no logic of its own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hsm import HsmConfigError, HsmError
from kms.audit.errors import AuditError
from kms.errors import KmsError

Handler = Callable[[argparse.Namespace], int]


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    from kms.cli import (
        audit_cmd,
        bench_cmd,
        init_cmd,
        keys_cmd,
        serve_cmd,
        tokens_cmd,
        xks_cmd,
    )

    parser = argparse.ArgumentParser(prog="kms", description="Customer-managed-key service")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (init_cmd, serve_cmd, keys_cmd, xks_cmd, tokens_cmd, audit_cmd):
        module.register(sub, _json_flag)
    bench_cmd.register(sub, _json_flag)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KmsError as exc:
        print(f"kms: error: {exc.message}", file=sys.stderr)
        return 1
    except AuditError as exc:
        print(f"kms: error: audit log: {exc}", file=sys.stderr)
        return 1
    except HsmConfigError as exc:
        print(f"kms: error: HSM configuration: {exc}", file=sys.stderr)
        return 1
    except HsmError as exc:
        print(f"kms: error: the HSM failed ({type(exc).__name__})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # never a stack trace to the user; the type helps support
        print(f"kms: internal error ({type(exc).__name__})", file=sys.stderr)
        return 1


def run() -> None:
    sys.exit(main())


def command(sub: Any, name: str, handler: Handler, help_text: str,
            json_flag: Callable[[argparse.ArgumentParser], None] | None = None,
            ) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(handler=handler)
    if json_flag is not None:
        json_flag(p)
    return p
