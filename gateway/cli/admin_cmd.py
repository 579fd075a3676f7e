"""``gateway tenants|provider-keys|virtual-keys ...``: administration through the services."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from gateway.cli.output import emit, read_secret

if TYPE_CHECKING:
    from gateway.services import Services


def _services() -> Services:
    # Imported here: `gateway --help` should not pay for botocore and SQLAlchemy.
    from gateway.services import build_services
    from gateway.settings import Settings

    return build_services(Settings.from_env())


def _group(sub: Any, name: str, help_text: str) -> Any:
    p = sub.add_parser(name, help=help_text)
    return p.add_subparsers(dest="action", required=True, metavar="ACTION")


def _cmd(sub: Any, name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=handler)
    return p


def register(sub: Any) -> None:
    t = _group(sub, "tenants", "tenants and their customer keys")
    p = _cmd(t, "create", tenants_create, "bind a tenant to its key (secret on stdin)")
    p.add_argument("tenant")
    p.add_argument("--xks-endpoint", required=True,
                   help="scheme://host[:port]/{prefix}: everything before /kms/xks/v1")
    p.add_argument("--key-id", required=True)
    p.add_argument("--access-key-id", required=True)
    p.add_argument("--rpm", type=int, help="tenant-wide requests per minute")
    p.add_argument("--tpm", type=int, help="tenant-wide tokens per minute")
    p.add_argument("--check", action="store_true",
                   help="call the key service (metadata) before saving")
    p.add_argument("--pii", default="off", choices=("off", "forward", "logs"),
                   help="PII redaction: off, before forwarding (forward), or in the stored "
                        "log only (logs)")
    _cmd(t, "list", tenants_list, "list tenants")
    p = _cmd(t, "set-pii", tenants_set_pii, "change a tenant's PII redaction mode")
    p.add_argument("tenant")
    p.add_argument("mode", choices=("off", "forward", "logs"))

    pk = _group(sub, "provider-keys", "BYOK provider API keys (never shown)")
    p = _cmd(pk, "add", provider_keys_add, "add a provider key (API key on stdin)")
    p.add_argument("tenant")
    p.add_argument("--provider", required=True)
    p.add_argument("--base-url", required=True)
    p = _cmd(pk, "rotate", provider_keys_rotate, "replace a provider key (new key on stdin)")
    p.add_argument("id")
    p = _cmd(pk, "delete", provider_keys_delete, "delete a provider key")
    p.add_argument("id")
    p = _cmd(pk, "list", provider_keys_list, "list a tenant's provider keys (ids only)")
    p.add_argument("tenant")

    vk = _group(sub, "virtual-keys", "keys for the gateway's clients")
    p = _cmd(vk, "create", virtual_keys_create, "issue a key (printed once)")
    p.add_argument("tenant")
    p.add_argument("--env", default="prod", choices=("dev", "staging", "prod"))
    p.add_argument("--models", default="", help="comma-separated; empty = any")
    p.add_argument("--rpm", type=int)
    p.add_argument("--tpm", type=int)
    p.add_argument("--expires-in-days", type=float)
    p = _cmd(vk, "revoke", virtual_keys_revoke, "revoke a key")
    p.add_argument("id")
    p = _cmd(vk, "list", virtual_keys_list, "list a tenant's keys (never the keys)")
    p.add_argument("tenant")


def tenants_create(args: argparse.Namespace) -> int:
    secret = read_secret("XKS secret access key: ")
    s = _services()
    try:
        tenant = s.tenants.create(args.tenant, args.xks_endpoint, args.key_id,
                                  args.access_key_id, secret, rpm=args.rpm, tpm=args.tpm,
                                  pii_mode=args.pii)
        if args.check:
            s.tenant_keys.call(tenant.id, lambda: s.tenant_keys.crypto(tenant.id)
                               .client.metadata(tenant.key_id))
    finally:
        s.close()
    emit(args, {"id": tenant.id, "xks_endpoint": tenant.xks_endpoint, "key_id": tenant.key_id,
                "access_key_id": tenant.access_key_id, "pii": tenant.pii_mode},
         f"tenant {tenant.id}: key {tenant.key_id} at {tenant.xks_endpoint}")
    return 0


def tenants_set_pii(args: argparse.Namespace) -> int:
    s = _services()
    try:
        tenant = s.tenants.set_pii(args.tenant, args.mode)
    finally:
        s.close()
    emit(args, {"id": tenant.id, "pii": tenant.pii_mode},
         f"tenant {tenant.id}: PII redaction {tenant.pii_mode}")
    return 0


def tenants_list(args: argparse.Namespace) -> int:
    s = _services()
    try:
        rows = [{"id": t.id, "xks_endpoint": t.xks_endpoint, "key_id": t.key_id,
                 "access_key_id": t.access_key_id, "pii": t.pii_mode} for t in s.tenants.all()]
    finally:
        s.close()
    emit(args, {"tenants": rows},
         "\n".join(f"{r['id']}\t{r['key_id']}\t{r['xks_endpoint']}\tpii={r['pii']}"
                   for r in rows))
    return 0


def _pk(info: Any) -> dict[str, Any]:
    return {"id": info.id, "tenant": info.tenant_id, "provider": info.provider,
            "base_url": info.base_url, "created_at": info.created_at,
            "rotated_at": info.rotated_at}


def provider_keys_add(args: argparse.Namespace) -> int:
    api_key = read_secret("provider API key: ")
    s = _services()
    try:
        s.tenants.get(args.tenant)
        info = s.provider_keys.add(args.tenant, args.provider, args.base_url, api_key)
    finally:
        s.close()
    emit(args, _pk(info), info.id)
    return 0


def provider_keys_rotate(args: argparse.Namespace) -> int:
    api_key = read_secret("new provider API key: ")
    s = _services()
    try:
        info = s.provider_keys.rotate(args.id, api_key)
    finally:
        s.close()
    emit(args, _pk(info), f"rotated {info.id}")
    return 0


def provider_keys_delete(args: argparse.Namespace) -> int:
    s = _services()
    try:
        s.provider_keys.delete(args.id)
    finally:
        s.close()
    emit(args, {"id": args.id, "deleted": True}, f"deleted {args.id}")
    return 0


def provider_keys_list(args: argparse.Namespace) -> int:
    s = _services()
    try:
        s.tenants.get(args.tenant)
        rows = [_pk(i) for i in s.provider_keys.for_tenant(args.tenant)]
    finally:
        s.close()
    emit(args, {"provider_keys": rows},
         "\n".join(f"{r['id']}\t{r['provider']}\t{r['base_url']}" for r in rows))
    return 0


def virtual_keys_create(args: argparse.Namespace) -> int:
    s = _services()
    try:
        key, secret = s.virtual_keys.create(
            args.tenant, env=args.env, models=args.models.split(",") if args.models else [],
            rpm=args.rpm, tpm=args.tpm, expires_in_days=args.expires_in_days)
    finally:
        s.close()
    emit(args, {**key.public(), "key": secret},
         f"{key.id}\n{secret}\n(the key is shown only this once)")
    return 0


def virtual_keys_revoke(args: argparse.Namespace) -> int:
    s = _services()
    try:
        key = s.virtual_keys.revoke(args.id)
    finally:
        s.close()
    emit(args, key.public(), f"revoked {key.id}")
    return 0


def virtual_keys_list(args: argparse.Namespace) -> int:
    s = _services()
    try:
        keys = s.virtual_keys.for_tenant(args.tenant)
    finally:
        s.close()
    emit(args, {"virtual_keys": [k.public() for k in keys]},
         "\n".join(f"{k.id}\t{k.env}\t{'revoked' if k.revoked_at else 'active'}"
                   for k in keys))
    return 0
