"""``kms keys ...``: the key lifecycle through the shared service layer."""

from __future__ import annotations

import argparse
from typing import Any

from kms.audit.event import cli_actor
from kms.cli.context import runtime
from kms.cli.main import command
from kms.cli.output import emit, key_line
from kms.errors import ValidationError
from kms.keys.model import KeyRecord, parse_usage


def register(sub: Any, json_flag: Any) -> None:
    keys = sub.add_parser("keys", help="create and manage keys").add_subparsers(
        dest="keys_command", required=True, metavar="COMMAND")
    p = command(keys, "create", _create, "create a key (AES-256 in the HSM)", json_flag)
    p.add_argument("key_id")
    p.add_argument("--store", default="default")
    p.add_argument("--usage", default="ENCRYPT,DECRYPT",
                   help="subset of ENCRYPT,DECRYPT; '' for none")
    p.add_argument("--description", help="what the key protects (at most 256 characters)")
    command(keys, "list", _list, "list keys", json_flag).add_argument("--store")
    command(keys, "show", _show, "show one key", json_flag).add_argument("key_id")
    command(keys, "rotate", _rotate, "add a new primary version", json_flag).add_argument(
        "key_id")
    p = command(keys, "set-min-decrypt-version", _min_version,
                "refuse to decrypt data of older versions", json_flag)
    p.add_argument("key_id")
    p.add_argument("version", type=int)
    command(keys, "enable", _enable, "enable a revoked key", json_flag).add_argument("key_id")
    p = command(keys, "revoke", _revoke, "the kill switch: refuse all use now", json_flag)
    p.add_argument("key_id")
    p.add_argument("--reason", required=True)
    p = command(keys, "schedule-deletion", _schedule, "destroy after a waiting period",
                json_flag)
    p.add_argument("key_id")
    p.add_argument("--days", type=int, required=True)
    command(keys, "cancel-deletion", _cancel, "cancel a scheduled deletion",
            json_flag).add_argument("key_id")
    p = command(keys, "destroy", _destroy, "crypto-shred now (irreversible)", json_flag)
    p.add_argument("key_id")
    p.add_argument("--confirm", required=True, metavar="KEY_ID",
                   help="repeat the key id to confirm")
    p = command(keys, "set-rules", _rules,
                "secondary authorization: JSON allow lists on requestMetadata ('' clears)",
                json_flag)
    p.add_argument("key_id")
    p.add_argument("rules", help='e.g. \'{"awsPrincipalArn": ["arn:aws:iam::1:role/app"]}\'')
    p = command(keys, "import-hsm", _import, "register an existing HSM key by label", json_flag)
    p.add_argument("key_id")
    p.add_argument("--label", required=True)
    p.add_argument("--store", default="default")
    p.add_argument("--usage", default="ENCRYPT,DECRYPT")


def _show_key(args: argparse.Namespace, key: KeyRecord, verb: str) -> int:
    data = key.to_json()
    emit(args, data, f"{verb} {key.key_id}: {key.state.value}, primary version "
                     f"v{key.primary_version}, usage {','.join(data['usage']) or '(none)'}")
    return 0


def _create(args: argparse.Namespace) -> int:
    with runtime() as rt:
        key = rt.keys.create_key(args.key_id, parse_usage(args.usage), cli_actor(), args.store,
                                 args.description)
        return _show_key(args, key, "created")


def _list(args: argparse.Namespace) -> int:
    with runtime() as rt:
        keys = [k.to_json() for k in rt.registry.list_keys(args.store)]
    emit(args, {"keys": keys}, "\n".join(key_line(k) for k in keys) or "(no keys)")
    return 0


def _show(args: argparse.Namespace) -> int:
    with runtime() as rt:
        key = rt.registry.get_key(args.key_id)
    data = key.to_json()
    lines = [f"{k}: {v}" for k, v in data.items() if k != "versions"]
    lines += [f"version {v['version']}: created {v['createdAt']}"
              + (" (imported)" if v["imported"] else "") for v in key.to_json()["versions"]]
    emit(args, data, "\n".join(lines))
    return 0


def _rotate(args: argparse.Namespace) -> int:
    with runtime() as rt:
        return _show_key(args, rt.keys.rotate(args.key_id, cli_actor()), "rotated")


def _min_version(args: argparse.Namespace) -> int:
    with runtime() as rt:
        key = rt.keys.set_min_decrypt_version(args.key_id, args.version, cli_actor())
        return _show_key(args, key, "updated")


def _enable(args: argparse.Namespace) -> int:
    with runtime() as rt:
        return _show_key(args, rt.keys.enable(args.key_id, cli_actor()), "enabled")


def _revoke(args: argparse.Namespace) -> int:
    with runtime() as rt:
        return _show_key(args, rt.keys.revoke(args.key_id, args.reason, cli_actor()), "revoked")


def _schedule(args: argparse.Namespace) -> int:
    with runtime() as rt:
        key = rt.keys.schedule_deletion(args.key_id, args.days, cli_actor())
        return _show_key(args, key, f"deletion due {key.deletion_due} for")


def _cancel(args: argparse.Namespace) -> int:
    with runtime() as rt:
        return _show_key(args, rt.keys.cancel_deletion(args.key_id, cli_actor()),
                         "deletion cancelled for")


def _destroy(args: argparse.Namespace) -> int:
    if args.confirm != args.key_id:
        raise ValidationError("--confirm must repeat the key id")
    with runtime() as rt:
        return _show_key(args, rt.keys.destroy(args.key_id, cli_actor()), "destroyed")


def _import(args: argparse.Namespace) -> int:
    with runtime() as rt:
        key = rt.keys.import_hsm_key(args.key_id, args.label, parse_usage(args.usage),
                                     cli_actor(), args.store)
        return _show_key(args, key, "imported")


def _rules(args: argparse.Namespace) -> int:
    import json

    from kms.xks.authorization import parse_rules

    text = json.dumps(parse_rules(args.rules), sort_keys=True) if args.rules else None
    with runtime() as rt:
        key = rt.keys.set_rules(args.key_id, text, cli_actor())
    emit(args, {"keyId": key.key_id, "rules": json.loads(text) if text else None},
         f"rules of {key.key_id}: {text or 'none'}")
    return 0
