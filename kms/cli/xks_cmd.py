"""``kms xks stores ...`` and ``kms xks credentials ...``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kms.audit.event import cli_actor
from kms.cli.context import runtime
from kms.cli.main import command
from kms.cli.output import emit
from kms.errors import ValidationError
from kms.xks.credentials import Secret, console_upload_json


def register(sub: Any, json_flag: Any) -> None:
    xks = sub.add_parser("xks", help="XKS key stores and credentials").add_subparsers(
        dest="xks_command", required=True, metavar="COMMAND")
    stores = xks.add_parser("stores", help="key stores").add_subparsers(
        dest="stores_command", required=True, metavar="COMMAND")
    p = command(stores, "create", _store_create, "create a key store", json_flag)
    p.add_argument("name")
    p.add_argument("--uri-prefix", required=True)
    p.add_argument("--throttle-rps", type=int)
    command(stores, "list", _store_list, "list key stores", json_flag)
    command(stores, "disable", _store_disable, "refuse every key of a store",
            json_flag).add_argument("name")
    command(stores, "enable", _store_enable, "enable a store again", json_flag).add_argument(
        "name")
    p = command(stores, "set-throttle", _store_throttle,
                "per-process request quota (0 = none)", json_flag)
    p.add_argument("name")
    p.add_argument("rps", type=int)

    creds = xks.add_parser("credentials", help="SigV4 credentials").add_subparsers(
        dest="credentials_command", required=True, metavar="COMMAND")
    p = command(creds, "add", _cred_add,
                "add a credential; the secret is read from stdin, generated if stdin is empty",
                json_flag)
    p.add_argument("store")
    p.add_argument("--access-key-id")
    command(creds, "list", _cred_list, "list a store's credential ids",
            json_flag).add_argument("store")
    p = command(creds, "remove", _cred_remove, "remove a credential", json_flag)
    p.add_argument("store")
    p.add_argument("access_key_id")


def _store_create(args: argparse.Namespace) -> int:
    with runtime() as rt:
        store = rt.keys.create_store(args.name, args.uri_prefix, cli_actor(),
                                     throttle_rps=args.throttle_rps)
    emit(args, {"name": store.name, "uriPrefix": store.uri_prefix},
         f"created store {store.name} at /{store.uri_prefix}/kms/xks/v1")
    return 0


def _store_list(args: argparse.Namespace) -> int:
    with runtime() as rt:
        stores = rt.registry.list_stores()
    data = [{"name": s.name, "uriPrefix": s.uri_prefix, "enabled": s.enabled,
             "throttleRps": s.throttle_rps} for s in stores]
    emit(args, {"stores": data}, "\n".join(
        f"{s.name:<20} /{s.uri_prefix}/kms/xks/v1 {'enabled' if s.enabled else 'DISABLED'}"
        for s in stores))
    return 0


def _store_disable(args: argparse.Namespace) -> int:
    with runtime() as rt:
        rt.keys.set_store_enabled(args.name, False, cli_actor())
    emit(args, {"name": args.name, "enabled": False}, f"store {args.name} disabled")
    return 0


def _store_enable(args: argparse.Namespace) -> int:
    with runtime() as rt:
        rt.keys.set_store_enabled(args.name, True, cli_actor())
    emit(args, {"name": args.name, "enabled": True}, f"store {args.name} enabled")
    return 0


def _store_throttle(args: argparse.Namespace) -> int:
    if args.rps < 0:
        raise ValidationError("rps must be 0 (no quota) or positive")
    with runtime() as rt:
        rt.registry.update_store(args.name, throttle_rps=args.rps or None, clear_throttle=True)
    emit(args, {"name": args.name, "throttleRps": args.rps or None},
         f"store {args.name}: quota {args.rps or 'none'}")
    return 0


def _cred_add(args: argparse.Namespace) -> int:
    given = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read().strip()
    with runtime() as rt:
        store = rt.registry.get_store(args.store)
        akid, secret = rt.credentials.add(store.name, args.access_key_id,
                                          Secret(given) if given else None, cli_actor())
    upload = console_upload_json(store.uri_prefix, akid, secret)
    data: dict[str, Any] = {"store": store.name, "accessKeyId": akid, "upload": upload}
    if not given:
        data["secret"] = secret.reveal()
    if args.json:
        emit(args, data, "")
    else:
        text = f"added credential {akid} to store {store.name}"
        if not given:
            text += f"\nsecret (shown once): {secret.reveal()}"
        text += "\nAWS console upload file:\n" + _dump(upload)
        print(text)
    return 0


def _dump(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2)


def _cred_list(args: argparse.Namespace) -> int:
    with runtime() as rt:
        rt.registry.get_store(args.store)
        creds = rt.credentials.list(args.store)
    emit(args, {"credentials": [{"accessKeyId": c.access_key_id, "createdAt": c.created_at}
                                for c in creds]},
         "\n".join(f"{c.access_key_id}  {c.created_at}" for c in creds))
    return 0


def _cred_remove(args: argparse.Namespace) -> int:
    with runtime() as rt:
        rt.credentials.remove(args.store, args.access_key_id, cli_actor())
    emit(args, {"removed": args.access_key_id}, f"removed credential {args.access_key_id}")
    return 0
