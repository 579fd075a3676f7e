"""``kms audit export | verify | prove | verify-proof | checkpoint``.

``verify`` and ``verify-proof`` need nothing but their inputs and the public key: no
database, no HSM (an auditor runs them on their own machine).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kms.cli.main import command
from kms.cli.output import emit
from kms.errors import ValidationError


def register(sub: Any, json_flag: Any) -> None:
    audit = sub.add_parser("audit", help="the tamper-evident audit log").add_subparsers(
        dest="audit_command", required=True, metavar="COMMAND")
    command(audit, "export", _export, "export records, checkpoints and the public key",
            json_flag).add_argument("out_dir")
    p = command(audit, "verify", _verify,
                "verify an export offline (exit 0 valid, 1 invalid, 3 incomplete)", json_flag)
    p.add_argument("out_dir")
    p.add_argument("--public-key", help="the log's public key (PEM), obtained out of band")
    p = command(audit, "prove", _prove, "inclusion proof of one record (JSON)")
    p.add_argument("seq", type=int)
    p.add_argument("--json", action="store_true", help="accepted; the proof is always JSON")
    p = command(audit, "verify-proof", _verify_proof, "check an inclusion proof offline",
                json_flag)
    p.add_argument("proof_file")
    p.add_argument("--public-key", required=True)
    command(audit, "checkpoint", _checkpoint, "sign a checkpoint now", json_flag)


def _export(args: argparse.Namespace) -> int:
    from kms.audit.event import AuditEvent, cli_actor
    from kms.audit.export_format import write_export
    from kms.audit.record import Operation, Outcome
    from kms.cli.context import runtime

    out = Path(args.out_dir)
    with runtime() as rt:
        rt.audit.append(AuditEvent(op=Operation.AUDIT_EXPORT, outcome=Outcome.OK,
                                   actor=cli_actor()))
        rt.audit.checkpoint()
        size = rt.audit.head().size
        notes = [n for n in rt.audit.checkpoints()]
        summary = write_export(out, rt.audit.records(stop=size), notes,
                               rt.audit.public_key_pem, rt.audit.origin, rt.audit.key_name)
    emit(args, {"outDir": str(out), "records": summary.record_count,
                "checkpoints": len(summary.checkpoint_sizes)},
         f"exported {summary.record_count} records and {len(summary.checkpoint_sizes)} "
         f"checkpoints to {out}")
    return 0


def _progress() -> Any:
    if not sys.stderr.isatty():
        return None

    def show(n: int) -> None:
        sys.stderr.write(f"\rverified {n:,} records")
        sys.stderr.flush()

    return show


def _verify(args: argparse.Namespace) -> int:
    from kms.audit.errors import AuditError
    from kms.audit.verify import format_report, verify_export

    key = _read_key(args.public_key) if args.public_key else None
    try:
        report = verify_export(args.out_dir, key, _progress())
    except AuditError as exc:
        print(f"kms: error: {exc}", file=sys.stderr)
        return 2
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        sys.stdout.write(format_report(report).rstrip("\n") + "\n")
    return report.exit_code


def _read_key(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from None


def _prove(args: argparse.Namespace) -> int:
    from kms.audit.verify import make_inclusion_proof
    from kms.cli.context import runtime

    with runtime() as rt:
        head = rt.audit.head()
        if not 0 <= args.seq < head.size:
            raise ValidationError(f"there is no record {args.seq} (the log has {head.size})")
        latest = rt.audit.latest_checkpoint()
        note = latest[0] if latest else None
        from kms.audit.checkpoint import parse_checkpoint, parse_note

        if note is None or parse_checkpoint(parse_note(note).text).size <= args.seq:
            note = rt.audit.checkpoint()
        size = parse_checkpoint(parse_note(note).text).size
        leaves = rt.audit.leaf_hashes(size)
        record = next(iter(rt.audit.records(args.seq, args.seq + 1)))
        proof = make_inclusion_proof(leaves, args.seq, note, record)
    sys.stdout.write(json.dumps(proof, indent=2, sort_keys=True) + "\n")
    return 0


def _verify_proof(args: argparse.Namespace) -> int:
    from kms.audit.errors import AuditError
    from kms.audit.verify import verify_inclusion_proof

    try:
        text = Path(args.proof_file).read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {args.proof_file}: {exc.strerror}") from None
    try:
        result = verify_inclusion_proof(text, _read_key(args.public_key))
    except AuditError as exc:
        emit(args, {"valid": False, "error": str(exc)}, f"INVALID: {exc}")
        return 1
    emit(args, {"valid": True, "seq": result.seq, "treeSize": result.tree_size},
         f"valid: record {result.seq} is in the signed log of size {result.tree_size}")
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    from kms.cli.context import runtime

    with runtime() as rt:
        note = rt.audit.checkpoint()
    emit(args, {"checkpoint": note}, note)
    return 0
