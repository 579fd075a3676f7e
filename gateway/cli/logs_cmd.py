"""``gateway logs list TENANT`` and ``gateway logs show TENANT REQUEST_ID``.

``show`` decrypts through the tenant's key, on demand: each decrypt lands in the tenant's
KMS audit log with the gateway's principal and the request id as ``kmsRequestId``. A
revoked key makes it fail cleanly (exit 1, no partial output).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from gateway.cli.output import emit

if TYPE_CHECKING:
    from gateway.services import Services


def _services() -> Services:
    from gateway.services import build_services
    from gateway.settings import Settings

    return build_services(Settings.from_env())


def register(sub: Any) -> None:
    p = sub.add_parser("logs", help="the encrypted request log")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("list", help="clear metadata of a tenant's requests")
    q.add_argument("tenant")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=logs_list)
    q = actions.add_parser("show", help="decrypt one request's prompt and response")
    q.add_argument("tenant")
    q.add_argument("request_id")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=logs_show)
    q = actions.add_parser("purge", help="retention: delete a tenant's old records")
    q.add_argument("tenant")
    q.add_argument("--older-than-days", type=float, required=True)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=logs_purge)


def logs_list(args: argparse.Namespace) -> int:
    s = _services()
    try:
        s.tenants.get(args.tenant)
        rows = [r.as_dict() for r in s.request_log.recent(args.tenant, args.limit)]
    finally:
        s.close()
    emit(args, {"requests": rows},
         "\n".join(f"{r['id']}\t{r['created_at']}\t{r['status']}\t{r['virtual_key_id']}\t"
                   f"{r['total_tokens']}" for r in rows))
    return 0


def logs_show(args: argparse.Namespace) -> int:
    s = _services()
    try:
        record = s.request_log.show(args.tenant, args.request_id)
    finally:
        s.close()
    emit(args, record, json.dumps(record, indent=2, default=str))
    return 0


def logs_purge(args: argparse.Namespace) -> int:
    s = _services()
    try:
        s.tenants.get(args.tenant)
        count = s.request_log.purge_older_than(args.tenant, args.older_than_days)
    finally:
        s.close()
    emit(args, {"tenant": args.tenant, "deleted": count}, f"deleted {count} records")
    return 0
