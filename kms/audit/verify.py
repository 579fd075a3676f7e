"""Offline verifier of an audit export, and inclusion proofs (`kms audit verify|prove`).

:func:`verify_export` needs nothing but the export directory (layout:
:mod:`kms.audit.export_format`) and the checkpoint public key. An auditor should pass the
PEM they obtained out of band (``public_key_pem=``): the copy inside the export is only
used when none is given, and the report then says so (``key_source == "export"``),
because whoever could alter the export could also replace that key.

It streams: records are read line by line and never kept; the state is the Merkle compact
range, the previous record's hash, a small window of recent record hashes (to tell a
duplicate from a forged record) and the open seq gaps. Every record is a leaf, so the
root at every checkpoint size is recomputed from the compact range and compared with the
signed root; two checkpoints that both match the records are consistent by
construction, and a checkpoint that does not match while a later one does is a fork.

Result: ``valid`` (exit 0), ``invalid`` (exit 1) or ``incomplete`` (exit 3: everything
checks out but some records are not covered by any signed checkpoint, or there is no
checkpoint). Exit code 2 is reserved for usage errors (e.g. no export directory, an
unreadable ``--public-key``), which are raised as exceptions here. Fault kinds are listed
in :class:`FaultKind` and explained in docs/audit.md.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import gc
import hashlib
import json
import queue
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec

from kms.audit import merkle
from kms.audit.canonical_lines import CANONICAL_LINE, Run, canonical_runs
from kms.audit.checkpoint import (
    MAX_NOTE_BYTES,
    Checkpoint,
    key_id,
    load_public_key_pem,
    parse_checkpoint,
    parse_note,
    verify_note,
)
from kms.audit.errors import (
    CheckpointError,
    ExportError,
    InvalidProofError,
    NoteFormatError,
    NoteSignatureError,
    RecordFormatError,
)
from kms.audit.export_format import (
    CHECKPOINT_DIR,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    PUBLIC_KEY_NAME,
    RECORDS_DIR,
    checkpoint_file_name,
    parse_checkpoint_file_name,
    parse_record_file_name,
    record_file_name,
)
from kms.audit.merkle import extend_right_edge
from kms.audit.record import (
    GENESIS_PREV,
    MAX_RECORD_BYTES,
    OPERATIONS,
    RECORD_FIELDS,
    SCHEMA_VERSION,
    AuditRecord,
    decode,
    is_real_day,
)
from kms.audit.scan_process import ScanProcess

__all__ = [
    "EXIT_INCOMPLETE",
    "EXIT_INVALID",
    "EXIT_USAGE",
    "EXIT_VALID",
    "Fault",
    "FaultKind",
    "InclusionResult",
    "VerifyReport",
    "format_report",
    "make_inclusion_proof",
    "verify_export",
    "verify_inclusion_proof",
]

EXIT_VALID: Final = 0
EXIT_INVALID: Final = 1
EXIT_USAGE: Final = 2
EXIT_INCOMPLETE: Final = 3

#: Faults kept in the report (all are counted).
MAX_REPORTED_FAULTS: Final = 1000
#: Recent records remembered (seq -> hash) to tell duplicates from forgeries (2**k).
_RECENT_WINDOW: Final = 4096
_MAX_OPEN_GAPS: Final = 4096
_PROGRESS_EVERY: Final = 10_000


class FaultKind(StrEnum):
    """What can be wrong with an export (meanings: docs/audit.md, "Failure kinds")."""

    MALFORMED = "malformed"
    NON_CANONICAL = "non_canonical"
    MISSING_RECORD = "missing_record"
    DUPLICATE_RECORD = "duplicate_record"
    OUT_OF_ORDER = "out_of_order"
    CHAIN_BROKEN = "chain_broken"
    CHECKPOINT_ROOT_MISMATCH = "checkpoint_root_mismatch"
    CHECKPOINT_BEYOND_LOG = "checkpoint_beyond_log"
    FORK = "fork"
    BAD_SIGNATURE = "bad_signature"
    MALFORMED_CHECKPOINT = "malformed_checkpoint"
    STALE_CHECKPOINT = "stale_checkpoint"
    MANIFEST_MISMATCH = "manifest_mismatch"
    MANIFEST_INVALID = "manifest_invalid"


_RECORD_LEVEL: Final = frozenset(
    {
        FaultKind.MALFORMED,
        FaultKind.NON_CANONICAL,
        FaultKind.MISSING_RECORD,
        FaultKind.DUPLICATE_RECORD,
        FaultKind.OUT_OF_ORDER,
        FaultKind.CHAIN_BROKEN,
    }
)


@dataclass(frozen=True, slots=True)
class Fault:
    """One finding. ``seq`` is the record it is about (if any), ``checkpoint`` the tree
    size of the checkpoint it is about (if any)."""

    kind: FaultKind
    message: str
    seq: int | None = None
    checkpoint: int | None = None

    def sort_key(self) -> tuple[int, int, int]:
        """Order used to pick the first fault: by record position, record faults first."""
        if self.seq is not None:
            position = self.seq
        elif self.checkpoint is not None:
            position = max(self.checkpoint - 1, 0)
        else:
            position = 1 << 62
        tier = 0 if self.kind in _RECORD_LEVEL else 1 if self.checkpoint is not None else 2
        return (position, tier, self.checkpoint if self.checkpoint is not None else -1)

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "kind": str(self.kind),
            "message": self.message,
            "seq": self.seq,
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of :func:`verify_export`."""

    status: str  # "valid" | "invalid" | "incomplete"
    first_fault: Fault | None
    faults: tuple[Fault, ...]
    fault_count: int
    record_count: int
    checkpoint_count: int
    latest_checkpoint_size: int | None
    latest_root: str | None
    uncovered_records: int
    origin: str | None
    key_name: str | None
    key_id: str | None
    key_source: str  # "argument" | "export" | "none"
    warnings: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """0 valid, 1 invalid, 3 incomplete (2 is the CLI's usage error)."""
        return {"valid": EXIT_VALID, "incomplete": EXIT_INCOMPLETE}.get(self.status, EXIT_INVALID)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (what ``--json`` prints)."""
        return {
            "checkpoint_count": self.checkpoint_count,
            "exit_code": self.exit_code,
            "fault_count": self.fault_count,
            "faults": [f.to_json() for f in self.faults],
            "first_fault": None if self.first_fault is None else self.first_fault.to_json(),
            "key_id": self.key_id,
            "key_name": self.key_name,
            "key_source": self.key_source,
            "latest_checkpoint_size": self.latest_checkpoint_size,
            "latest_root": self.latest_root,
            "origin": self.origin,
            "record_count": self.record_count,
            "status": self.status,
            "uncovered_records": self.uncovered_records,
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        """Canonical JSON text of :meth:`to_dict`."""
        return str(rfc8785.dumps(self.to_dict()).decode("utf-8"))


def format_report(report: VerifyReport) -> str:
    """Human-readable summary for the CLI."""
    lines = [f"status: {report.status.upper()} (exit {report.exit_code})"]
    lines.append(f"records: {report.record_count}")
    if report.latest_checkpoint_size is not None:
        lines.append(
            f"checkpoints: {report.checkpoint_count} verified, latest size "
            f"{report.latest_checkpoint_size} root {report.latest_root}"
        )
    else:
        lines.append("checkpoints: none verified")
    if report.uncovered_records:
        lines.append(f"records after the latest checkpoint: {report.uncovered_records}")
    lines.append(
        f"key: {report.key_name} id {report.key_id} (from {report.key_source})"
        if report.key_id
        else "key: none"
    )
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    if report.first_fault is not None:
        lines.append(f"first fault: {_describe(report.first_fault)}")
    if report.fault_count > 1:
        lines.append(f"all faults ({report.fault_count}):")
        lines.extend(f"  - {_describe(f)}" for f in report.faults)
        if report.fault_count > len(report.faults):
            lines.append(f"  ... {report.fault_count - len(report.faults)} more")
    return "\n".join(lines) + "\n"


def _describe(fault: Fault) -> str:
    where = []
    if fault.seq is not None:
        where.append(f"record {fault.seq}")
    if fault.checkpoint is not None:
        where.append(f"checkpoint {fault.checkpoint}")
    loc = f" at {', '.join(where)}" if where else ""
    return f"{fault.kind}{loc}: {fault.message}"


# --- verification ------------------------------------------------------------------------


def _reject_number(text: str) -> Any:
    raise RecordFormatError("non-integer number")


# The C scanner is kept (no object hooks): duplicate keys are caught by the canonical
# re-encoding comparison, floats and NaN/Infinity are rejected here.
_loads: Final = json.JSONDecoder(
    parse_float=_reject_number, parse_constant=_reject_number
).decode
# For ASCII-only data whose numbers are all integers below 2**53, this encoder's output is
# byte-identical to RFC 8785: sorted keys (code point order == UTF-16 order for ASCII),
# no whitespace, the same escapes (\", \\, \b \f \n \r \t, \u00xx lowercase for other
# controls). Non-ASCII lines go through rfc8785 itself.
_fast_canonical: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
_FIELD_KEYS: Final = frozenset(RECORD_FIELDS)
_TIME_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_HEX64_RE: Final = re.compile(r"[0-9a-f]{64}\Z")
_MAX_INT: Final = (1 << 53) - 1


_OUTCOMES: Final = frozenset({"ok", "error", "denied"})



def _slow_check(line: bytes, newline_ok: bool) -> tuple[Any, FaultKind | None, str]:
    """Classify a line that failed the fast path: (parsed object, problem, message)."""
    if len(line) > MAX_RECORD_BYTES:
        return None, FaultKind.MALFORMED, "record line too long"
    try:
        obj = _loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecordFormatError, RecursionError):
        return None, FaultKind.MALFORMED, "not a JSON record"
    why = _schema_problem(obj) or _full_schema_problem(obj)
    if why is not None:
        return obj, FaultKind.MALFORMED, why
    try:
        if line.isascii():
            canonical = _fast_canonical(obj).encode() == line
        else:
            canonical = rfc8785.dumps(obj) == line
    except (ValueError, TypeError, rfc8785.CanonicalizationError):
        canonical = False
    if not canonical:
        return obj, FaultKind.NON_CANONICAL, "line is not the RFC 8785 canonical encoding"
    if not newline_ok:
        return obj, FaultKind.NON_CANONICAL, "last line of the file has no newline"
    return obj, None, ""


def _schema_problem(obj: Any) -> str | None:
    """Cheap structural check of a parsed record; the message, or None if it looks right."""
    if type(obj) is not dict or obj.keys() != _FIELD_KEYS:
        return "not a schema-1 record object (wrong or missing keys)"
    if obj["v"] != SCHEMA_VERSION or type(obj["v"]) is not int:
        return f"unsupported schema version {obj['v']!r}"
    seq = obj["seq"]
    if type(seq) is not int or not 0 <= seq <= _MAX_INT:
        return "seq must be a non-negative integer"
    prev = obj["prev"]
    if type(prev) is not str or not _HEX64_RE.match(prev):
        return "prev must be 64 lowercase hex characters"
    if obj["op"] not in OPERATIONS:
        return f"unknown op {obj['op']!r}"
    if obj["outcome"] not in ("ok", "error", "denied"):
        return "bad outcome"
    time = obj["time"]
    if type(time) is not str or not _TIME_RE.match(time):
        return "bad time"
    actor = obj["actor"]
    if type(actor) is not dict or actor.keys() != {"id", "kind"}:
        return "bad actor"
    return None


def _schema_valid_but_genesis(obj: dict[str, Any]) -> bool:
    """Whether a record object with the schema's keys passes every schema rule, leaving
    record 0's prev to the chain check (which reports it as a broken chain, as it does for
    the lines of the regex path)."""
    if obj["seq"] == 0:
        obj = {**obj, "prev": GENESIS_PREV}
    return _full_schema_problem(obj) is None


def _full_schema_problem(obj: Any) -> str | None:
    """Complete schema validation (used for the rare lines that fail the cheap path)."""
    try:
        AuditRecord.from_json(obj)
    except RecordFormatError as exc:
        return str(exc)
    return None


@dataclass(slots=True)
class _Faults:
    kept: list[Fault] = field(default_factory=list)
    count: int = 0
    first: Fault | None = None

    def add(self, kind: FaultKind, message: str, *, seq: int | None = None,
            checkpoint: int | None = None) -> None:
        fault = Fault(kind=kind, message=message, seq=seq, checkpoint=checkpoint)
        self.count += 1
        if len(self.kept) < MAX_REPORTED_FAULTS:
            self.kept.append(fault)
        if self.first is None or fault.sort_key() < self.first.sort_key():
            self.first = fault


@dataclass(slots=True)
class _SignedRoot:
    root: bytes
    label: str
    matched: bool | None = None  # None: not reached (beyond the log)


def _read_capped(path: Path, cap: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError:
        return None
    return data if len(data) <= cap else None


def _sha256_file(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def _load_manifest(root: Path, faults: _Faults) -> dict[str, Any] | None:
    data = _read_capped(root / MANIFEST_NAME, MAX_MANIFEST_BYTES)
    if data is None:
        faults.add(FaultKind.MANIFEST_INVALID, "manifest.json is missing, unreadable or too large")
        return None
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        faults.add(FaultKind.MANIFEST_INVALID, "manifest.json is not valid JSON")
        return None
    ok = (
        isinstance(manifest, dict)
        and manifest.get("format") == EXPORT_FORMAT
        and manifest.get("format_version") == EXPORT_FORMAT_VERSION
        and isinstance(manifest.get("origin"), str)
        and isinstance(manifest.get("key_name"), str)
        and isinstance(manifest.get("key_id"), str)
        and isinstance(manifest.get("record_count"), int)
        and isinstance(manifest.get("files"), list)
        and isinstance(manifest.get("checkpoints"), list)
        and all(
            isinstance(f, dict)
            and isinstance(f.get("path"), str)
            and isinstance(f.get("sha256"), str)
            for f in manifest["files"] + manifest["checkpoints"]
        )
        and all(isinstance(c.get("size"), int) for c in manifest["checkpoints"])
        and "latest_checkpoint" in manifest  # null when there is none, never absent
        and (
            manifest["latest_checkpoint"] is None
            or (
                isinstance(manifest["latest_checkpoint"], dict)
                and isinstance(manifest["latest_checkpoint"].get("size"), int)
            )
        )
    )
    if not ok:
        faults.add(
            FaultKind.MANIFEST_INVALID,
            f"manifest.json is not a {EXPORT_FORMAT} version {EXPORT_FORMAT_VERSION} manifest",
        )
        return None
    checked: dict[str, Any] = manifest
    return checked


def _note_origin(note: bytes) -> str | None:
    try:
        return parse_checkpoint(parse_note(note).text).origin
    except CheckpointError:
        return None


def verify_export(
    path: str | Path,
    public_key_pem: bytes | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    trusted_checkpoints: Sequence[str] = (),
    scan_process: bool | None = None,
) -> VerifyReport:
    """Verify an export directory; see the module docstring and docs/audit.md.

    ``public_key_pem``: the checkpoint key obtained out of band (overrides the export's
    copy). ``progress(n)`` is called every 10 000 records. ``trusted_checkpoints``: signed
    notes the auditor already holds (e.g. from an earlier audit or a witness); they are
    checked like the export's own checkpoints, and an export whose latest checkpoint is
    older than one of them is reported ``stale_checkpoint``. ``scan_process``: whether a
    second process scans the record blocks for canonical lines while this one hashes them
    (kms/audit/scan_process.py): ``None`` when the records are large enough to repay its
    start (``_SCAN_PROCESS_MIN_BYTES``), sharing the blocks with it once it has started;
    ``True`` always, waiting for it to start; ``False`` never. The report is the same.

    Raises :class:`ExportError` if ``path`` is not a directory and a ``CheckpointError``
    if the given key or a trusted checkpoint is unusable (usage errors, exit 2).
    """
    root = Path(path)
    if not root.is_dir():
        raise ExportError(f"{root} is not a directory")
    faults = _Faults()
    warnings: list[str] = []

    manifest = _load_manifest(root, faults)

    # --- key -----------------------------------------------------------------------------
    public_key: ec.EllipticCurvePublicKey | None = None
    if public_key_pem is not None:
        public_key = load_public_key_pem(public_key_pem)  # raises: usage error
        key_source = "argument"
    else:
        key_source = "export"
        warnings.append(
            "verified with the public key shipped inside the export; pass the key you "
            "obtained out of band (--public-key) for a meaningful result"
        )
        pem = _read_capped(root / PUBLIC_KEY_NAME, MAX_NOTE_BYTES)
        try:
            public_key = load_public_key_pem(pem) if pem is not None else None
        except CheckpointError:
            public_key = None
        if public_key is None:
            key_source = "none"
            faults.add(FaultKind.MANIFEST_INVALID, "public-key.pem is missing or unusable")
    kid = key_id(public_key).hex() if public_key is not None else None
    origin = manifest["origin"] if manifest else None
    key_name = manifest["key_name"] if manifest else None
    if manifest and kid is not None and manifest["key_id"] != kid:
        faults.add(
            FaultKind.MANIFEST_MISMATCH,
            f"manifest key id {manifest['key_id']} is not the verifying key's id {kid}",
        )

    # --- checkpoints ---------------------------------------------------------------------
    signed: dict[int, list[_SignedRoot]] = {}
    export_sizes: list[int] = []
    checkpoint_digests: dict[str, str] = {}
    ck_dir = root / CHECKPOINT_DIR
    entries = sorted(ck_dir.iterdir()) if ck_dir.is_dir() else []
    for entry in entries:
        rel = f"{CHECKPOINT_DIR}/{entry.name}"
        name_size = parse_checkpoint_file_name(entry.name)
        if name_size is None or not entry.is_file():
            faults.add(FaultKind.MANIFEST_MISMATCH, f"unexpected file {rel}")
            continue
        data = _read_capped(entry, MAX_NOTE_BYTES)
        if data is None:
            faults.add(FaultKind.MALFORMED_CHECKPOINT, f"{rel} unreadable or too large",
                       checkpoint=name_size)
            continue
        checkpoint_digests[rel] = hashlib.sha256(data).hexdigest()
        name = key_name if key_name is not None else _note_origin(data)
        if public_key is None or name is None:
            faults.add(FaultKind.BAD_SIGNATURE, f"{rel}: no key to verify it with",
                       checkpoint=name_size)
            continue
        try:
            cp = verify_note(data, public_key, name, origin=origin)
        except NoteSignatureError as exc:
            faults.add(FaultKind.BAD_SIGNATURE, f"{rel}: {exc}", checkpoint=name_size)
            continue
        except NoteFormatError as exc:
            faults.add(FaultKind.MALFORMED_CHECKPOINT, f"{rel}: {exc}", checkpoint=name_size)
            continue
        if cp.size != name_size:
            kind = (
                FaultKind.STALE_CHECKPOINT if cp.size < name_size
                else FaultKind.MALFORMED_CHECKPOINT
            )
            faults.add(kind, f"{rel} holds a checkpoint of size {cp.size}, not {name_size}",
                       checkpoint=name_size)
        signed.setdefault(cp.size, []).append(_SignedRoot(cp.root, rel))
        export_sizes.append(cp.size)

    latest_export = max(export_sizes) if export_sizes else None
    for i, note in enumerate(trusted_checkpoints):
        if public_key is None or key_name is None:
            raise ExportError("trusted checkpoints need a usable key and manifest")
        cp = verify_note(note, public_key, key_name, origin=origin)  # raises: usage error
        signed.setdefault(cp.size, []).append(_SignedRoot(cp.root, f"trusted checkpoint #{i}"))
        if latest_export is None or cp.size > latest_export:
            faults.add(
                FaultKind.STALE_CHECKPOINT,
                f"the export's latest checkpoint ({latest_export}) is older than trusted "
                f"checkpoint #{i} of size {cp.size}",
                checkpoint=cp.size,
            )

    if manifest is not None:
        listed: dict[str, Any] = {c["path"]: c for c in manifest["checkpoints"]}
        for rel, entry_data in listed.items():
            if rel not in checkpoint_digests:
                faults.add(FaultKind.MANIFEST_MISMATCH, f"{rel} listed in the manifest is missing",
                           checkpoint=entry_data["size"])
            elif checkpoint_digests[rel] != entry_data["sha256"]:
                faults.add(FaultKind.MANIFEST_MISMATCH,
                           f"{rel} differs from the file the manifest lists",
                           checkpoint=entry_data["size"])
        for rel in checkpoint_digests:
            if rel not in listed:
                faults.add(FaultKind.MANIFEST_MISMATCH, f"{rel} is not listed in the manifest")
        latest = manifest["latest_checkpoint"]
        if latest is not None:
            if latest_export is None or latest_export < latest["size"]:
                faults.add(
                    FaultKind.STALE_CHECKPOINT,
                    f"the manifest's latest checkpoint has size {latest['size']} but the newest "
                    f"valid checkpoint in the export has size {latest_export}",
                    checkpoint=latest["size"],
                )
            elif latest_export > latest["size"] or latest.get("path") != checkpoint_file_name(
                latest["size"]
            ):
                faults.add(FaultKind.MANIFEST_MISMATCH,
                           "latest_checkpoint in the manifest is not the newest checkpoint",
                           checkpoint=latest["size"])

    # --- records -------------------------------------------------------------------------
    rec_dir = root / RECORDS_DIR
    rec_files: list[tuple[int, Path]] = []
    if rec_dir.is_dir():
        for entry in sorted(rec_dir.iterdir()):
            idx = parse_record_file_name(entry.name)
            if idx is None or not entry.is_file():
                faults.add(FaultKind.MANIFEST_MISMATCH,
                           f"unexpected file {RECORDS_DIR}/{entry.name}")
                continue
            rec_files.append((idx, entry))
    rec_files.sort()
    for expect_idx, (idx, _) in enumerate(rec_files):
        if idx != expect_idx:
            faults.add(FaultKind.MANIFEST_MISMATCH,
                       f"record file {record_file_name(expect_idx)} is missing")
            break

    # The loop allocates only acyclic objects; pausing the cyclic GC keeps it from
    # rescanning the heap thousands of times (a large share of the run time otherwise).
    scanner = _start_scanner(rec_files, scan_process)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        n, file_digests = _stream_records(rec_files, signed, faults, progress, scanner)
    finally:
        if gc_was_enabled:
            gc.enable()
        if scanner is not None:
            scanner.close()

    if manifest is not None:
        listed_files = {f["path"]: f["sha256"] for f in manifest["files"]}
        actual = dict(file_digests)
        key_digest = _sha256_file(root / PUBLIC_KEY_NAME)
        if key_digest is not None:
            actual[PUBLIC_KEY_NAME] = key_digest
        for rel, digest in listed_files.items():
            if rel not in actual:
                faults.add(FaultKind.MANIFEST_MISMATCH, f"{rel} listed in the manifest is missing")
            elif actual[rel] != digest:
                faults.add(FaultKind.MANIFEST_MISMATCH,
                           f"{rel} differs from the file the manifest lists")
        for rel in actual:
            if rel not in listed_files:
                faults.add(FaultKind.MANIFEST_MISMATCH, f"{rel} is not listed in the manifest")
        if manifest["record_count"] != n:
            faults.add(FaultKind.MANIFEST_MISMATCH,
                       f"manifest says {manifest['record_count']} records, export has {n}")

    # --- checkpoint verdicts -------------------------------------------------------------
    matched_sizes = sorted(s for s, roots in signed.items() for r in roots if r.matched)
    for size in sorted(signed):
        for sr in signed[size]:
            if sr.matched is None:
                faults.add(
                    FaultKind.CHECKPOINT_BEYOND_LOG,
                    f"{sr.label} signs {size} records but the export has only {n}: "
                    f"records {n}..{size - 1} were removed",
                    seq=n, checkpoint=size,
                )
            elif not sr.matched:
                lower = max((s for s in matched_sizes if s < size), default=0)
                if any(s >= size for s in matched_sizes):
                    faults.add(
                        FaultKind.FORK,
                        f"{sr.label} signs a tree of size {size} that is inconsistent with a "
                        f"later (or equal-size) checkpoint that matches the records: the log "
                        f"was rewritten from somewhere in records {lower}..{size - 1} and "
                        f"signed twice",
                        seq=lower, checkpoint=size,
                    )
                else:
                    faults.add(
                        FaultKind.CHECKPOINT_ROOT_MISMATCH,
                        f"the Merkle root of records 0..{size - 1} is not the root signed in "
                        f"{sr.label}: records in {lower}..{size - 1} differ from what was signed",
                        checkpoint=size,
                    )

    good = sorted(s for s in matched_sizes)
    latest_size = good[-1] if good else None
    latest_root = None
    if latest_size is not None:
        latest_root = next(r.root for r in signed[latest_size] if r.matched).hex()
    uncovered = n - (latest_size or 0)
    if faults.count:
        status = "invalid"
    elif latest_size is None or uncovered > 0:
        status = "incomplete"
    else:
        status = "valid"
    if status == "incomplete":
        warnings.append(
            f"{uncovered} record(s) after the latest signed checkpoint are not covered by "
            "any signature"
            if latest_size is not None
            else "no signed checkpoint in the export"
        )
    kept = tuple(sorted(faults.kept, key=Fault.sort_key))
    return VerifyReport(
        status=status,
        first_fault=faults.first,
        faults=kept,
        fault_count=faults.count,
        record_count=n,
        checkpoint_count=len(set(good)),
        latest_checkpoint_size=latest_size,
        latest_root=latest_root,
        uncovered_records=max(uncovered, 0),
        origin=origin,
        key_name=key_name,
        key_id=kid,
        key_source=key_source,
        warnings=tuple(warnings),
    )


_CHUNK: Final = 1 << 22
_MAX_LINE: Final = 1 << 20
#: Records from this many bytes on get a scan process (its start takes 50-100 ms).
_SCAN_PROCESS_MIN_BYTES: Final = 4 * _CHUNK


def _start_scanner(rec_files: list[tuple[int, Path]],
                   wanted: bool | None) -> ScanProcess | None:
    """The scan process ``verify_export``'s ``scan_process`` asks for, if any."""
    wait = wanted is not None  # asked for explicitly: from the first block on
    if wanted is None:
        size = 0
        for _idx, file_path in rec_files:
            with contextlib.suppress(OSError):  # reported when it is read
                size += file_path.stat().st_size
        wanted = size >= _SCAN_PROCESS_MIN_BYTES
    if not wanted:
        return None
    scanner = ScanProcess()
    if wait:
        scanner.wait_ready()
    return scanner


class _ChunkHasher:
    """SHA-256 of a file's chunks, computed on a second thread in the order given: hashlib
    releases the GIL while it hashes a large buffer, so the file's digest (for the
    manifest) runs on the second core beside the line checks instead of before them."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="verify-file-hash",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        update = self._hash.update
        while (chunk := self._chunks.get()) is not None:
            if self._error is None:
                try:
                    update(chunk)
                except BaseException as exc:  # reported by hexdigest; keep draining
                    self._error = exc

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def close(self) -> None:
        """No more chunks: the thread ends once it has hashed those given."""
        if not self._closed:
            self._closed = True
            self._chunks.put(None)

    def hexdigest(self) -> str:
        """The digest of every chunk given (waits for the thread)."""
        self.close()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()


def _iter_blocks(path: Path,
                 file_hash: _ChunkHasher) -> Iterator[tuple[bytes, int, list[bytes], bool]]:
    """A file's lines, read in large chunks (hashing the file as a side effect), as
    ``(buf, end, lines, newline_ok)``: ``lines`` are the lines without their newline and,
    when ``end`` > 0, exactly ``buf[:end]`` split at its newlines (every one of them had
    its newline). The final line without newline comes alone with ``newline_ok`` False; a
    line longer than 1 MiB is cut (it is malformed anyway) so memory stays bounded."""
    rest = b""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                file_hash.update(chunk)
                buf = rest + chunk
                lines = buf.split(b"\n")
                rest = lines.pop()
                if lines:
                    yield buf, len(buf) - len(rest), lines, True
                if len(rest) > _MAX_LINE:
                    yield b"", 0, [rest], True
                    rest = b""
    finally:  # read to the end, or given up on (an error, the generator dropped)
        file_hash.close()
    if rest:
        yield b"", 0, [rest], False


def _scanned_blocks(path: Path, file_hash: _ChunkHasher, scanner: ScanProcess | None,
                    ) -> Iterator[tuple[list[bytes], bool, list[Run]]]:
    """``(lines, newline_ok, runs)`` of each block of :func:`_iter_blocks`, ``runs`` its
    canonical runs. With a scanner, block k + 1 is read, block k's runs taken from the
    scanner, block k + 1 handed to it, and then block k given to the caller: the process
    scans block k + 1 while the caller checks block k. A block the scanner does not take
    (not started yet, or failed) is scanned here."""
    if scanner is None:
        for buf, end, lines, newline_ok in _iter_blocks(path, file_hash):
            yield lines, newline_ok, canonical_runs(buf, end, lines) if end else []
        return
    submitted: tuple[bytes, int, list[bytes], bool, bool] | None = None

    def scanned(block: tuple[bytes, int, list[bytes], bool, bool],
                ) -> tuple[list[bytes], bool, list[Run]]:
        buf, end, lines, newline_ok, sent = block
        runs = scanner.result(len(lines)) if sent else None
        if runs is None:
            runs = canonical_runs(buf, end, lines) if end else []
        return lines, newline_ok, runs

    for buf, end, lines, newline_ok in _iter_blocks(path, file_hash):
        before = scanned(submitted) if submitted is not None else None
        submitted = (buf, end, lines, newline_ok, end > 0 and scanner.submit(buf, end))
        if before is not None:
            yield before
    if submitted is not None:
        yield scanned(submitted)


def _stream_records(
    rec_files: list[tuple[int, Path]],
    signed: dict[int, list[_SignedRoot]],
    faults: _Faults,
    progress: Callable[[int], None] | None,
    scanner: ScanProcess | None,
) -> tuple[int, list[tuple[str, str]]]:
    """Check every record line; returns (record count, [(file, sha256)]). ``scanner``:
    the process that finds the canonical runs of the blocks it is given (else all here)."""
    sha256 = hashlib.sha256
    loads = _loads
    fast = _fast_canonical
    add = faults.add
    sizes = sorted(signed)
    ck_i = 0
    field_keys = _FIELD_KEYS
    operations = OPERATIONS
    outcomes = _OUTCOMES
    time_match = _TIME_RE.match
    canonical_line = CANONICAL_LINE.fullmatch
    op_bytes = frozenset(op.encode() for op in OPERATIONS)
    outcome_bytes = frozenset(o.encode() for o in _OUTCOMES)

    def check_roots(size: int, stack: list[bytes]) -> None:
        if stack:
            r = stack[-1]
            for h in reversed(stack[:-1]):
                r = sha256(b"\x01" + h + r).digest()
        else:
            r = merkle.EMPTY_ROOT
        for sr in signed[size]:
            sr.matched = sr.root == r

    stack: list[bytes] = []  # compact range, inlined for speed
    n = 0
    if sizes and sizes[0] == 0:
        check_roots(0, stack)
        ck_i = 1
    next_ck = sizes[ck_i] if ck_i < len(sizes) else -1

    expected = 0
    prev_hex = GENESIS_PREV
    prev_flagged = False
    pending_break: int | None = None  # seq of a record whose prev did not match
    # Ring buffer of the last _RECENT_WINDOW records: seq -> hash of the first line seen.
    window_mask = _RECENT_WINDOW - 1
    ring_seq = [-1] * _RECENT_WINDOW
    ring_hash = [""] * _RECENT_WINDOW
    gaps: list[list[int]] = []  # open [start, end) seq ranges not seen yet
    digests: list[tuple[str, str]] = []

    def resolve_pending(break_again: bool) -> None:
        nonlocal pending_break
        assert pending_break is not None
        s = pending_break
        if s == 0:
            add(FaultKind.CHAIN_BROKEN,
                "record 0 was modified: its prev is not the genesis value (64 zeros)", seq=0)
        elif break_again:
            add(FaultKind.CHAIN_BROKEN,
                f"record {s} was modified: its prev does not match record {s - 1} and record "
                f"{s + 1}'s prev does not match it", seq=s)
        else:
            add(FaultKind.CHAIN_BROKEN,
                f"record {s - 1} was modified or inserted: its hash is not the prev that "
                f"record {s} committed to", seq=s - 1)
        pending_break = None

    for _idx, file_path in rec_files:
        file_hash = _ChunkHasher()
        for lines, newline_ok, runs in _scanned_blocks(file_path, file_hash, scanner):
            hexes = [sha256(x).hexdigest() for x in lines]
            r = 0
            i = 0
            count = len(lines)
            while i < count:
                # --- fast path ---------------------------------------------------------
                # Lines in a run of canonical lines (see canonical_runs), while the state
                # is clean: from the one whose seq is `expected` and whose prev is the
                # hash of the line before, up to the next broken link. For those, the
                # general path below would add no fault and only advance the state; here
                # that is done in bulk (hashes in list comprehensions, the Merkle tree a
                # level at a time). Every other line takes the general path.
                while r < len(runs) and runs[r].stop <= i:
                    r += 1
                if (r < len(runs) and runs[r].first <= i and pending_break is None
                        and not prev_flagged):
                    run = runs[r]
                    o = i - run.first
                    if run.seqs[o] == str(expected) and run.prev(o) == prev_hex:
                        breaks = run.link_breaks(hexes)
                        nb = bisect.bisect_right(breaks, o)
                        j = run.first + (breaks[nb] if nb < len(breaks)
                                         else run.stop - run.first)
                        leaves = [sha256(b"\x00" + x).digest() for x in lines[i:j]]
                        done = 0
                        while done < j - i:
                            # Up to the next checkpoint size or progress mark.
                            upto = j - i
                            if 0 < next_ck - n <= upto - done:
                                upto = done + next_ck - n
                            if progress is not None:
                                mark = (n // _PROGRESS_EVERY + 1) * _PROGRESS_EVERY
                                upto = min(upto, done + mark - n)
                            extend_right_edge(stack, n, leaves[done:upto])
                            n += upto - done
                            done = upto
                            if n == next_ck:
                                check_roots(n, stack)
                                ck_i += 1
                                next_ck = sizes[ck_i] if ck_i < len(sizes) else -1
                            if progress is not None and n % _PROGRESS_EVERY == 0:
                                progress(n)
                        # The ring keeps the first line seen per seq; these seqs are new
                        # and consecutive, so only the last _RECENT_WINDOW of them stay.
                        k = j - i
                        last = min(k, _RECENT_WINDOW)
                        first = expected + k - last
                        slot = first & window_mask
                        cut = min(last, _RECENT_WINDOW - slot)
                        ring_seq[slot:slot + cut] = range(first, first + cut)
                        ring_hash[slot:slot + cut] = hexes[j - last:j - last + cut]
                        ring_seq[:last - cut] = range(first + cut, first + last)
                        ring_hash[:last - cut] = hexes[j - last + cut:j]
                        expected += k
                        prev_hex = hexes[j - 1]
                        i = j
                        continue

                # --- general path: one line --------------------------------------------
                line = lines[i]
                line_hex = hexes[i]
                i += 1
                # Merkle leaf, appended whatever the line holds: the tree is over the export.
                h = sha256(b"\x00" + line).digest()
                s_ = n
                while s_ & 1:
                    h = sha256(b"\x01" + stack.pop() + h).digest()
                    s_ >>= 1
                stack.append(h)
                n += 1
                if n == next_ck:
                    check_roots(n, stack)
                    ck_i += 1
                    next_ck = sizes[ck_i] if ck_i < len(sizes) else -1
                if progress is not None and n % _PROGRESS_EVERY == 0:
                    progress(n)

                # --- parse and canonical form ----------------------------------------------
                # Fastest path: the line matches CANONICAL_LINE, a pattern that only matches
                # canonical schema-1 records with an empty detail (see its comment). Next: the
                # JSON path (ASCII line, right keys, cheap field checks, equal to its
                # canonical re-encoding). Everything else takes the slow path, which names
                # the problem precisely.
                m = canonical_line(line) if newline_ok else None
                if (m is not None and m.group(1) in op_bytes and m.group(2) in outcome_bytes
                        and is_real_day(m.group(5).decode("ascii"))):
                    seq = int(m.group(4))
                    rec_prev = m.group(3).decode("ascii")
                else:
                    obj: Any = None
                    problem: FaultKind | None = None
                    try:
                        if newline_ok and line.isascii() and len(line) <= MAX_RECORD_BYTES:
                            obj = loads(line.decode("ascii"))
                            v = obj["v"]
                            seq = obj["seq"]
                            ok = (
                                obj.keys() == field_keys
                                and type(seq) is int
                                and seq >= 0
                                and type(v) is int
                                and v == 1
                                and obj["op"] in operations
                                and obj["outcome"] in outcomes
                                and type(obj["prev"]) is str
                                and time_match(obj["time"]) is not None
                                and fast(obj).encode() == line
                                and _schema_valid_but_genesis(obj)
                            )
                        else:
                            ok = False
                    except Exception:
                        ok = False
                    if not ok:
                        obj, problem, message = _slow_check(line, newline_ok)
                    if problem is not None:
                        seq_guess = expected
                        if type(obj) is dict and type(obj.get("seq")) is int and obj["seq"] >= 0:
                            seq_guess = obj["seq"]
                        add(problem, message, seq=seq_guess)
                        if pending_break is not None:
                            resolve_pending(False)
                        expected = max(expected, seq_guess + 1)
                        prev_hex = line_hex
                        prev_flagged = True
                        continue
                    seq = obj["seq"]
                    rec_prev = obj["prev"]

                # --- numbering and chain ---------------------------------------------------
                flagged = False
                if seq == expected:
                    if rec_prev != prev_hex and not prev_flagged:
                        if pending_break is not None:
                            resolve_pending(True)
                        else:
                            pending_break = seq
                    elif pending_break is not None:
                        resolve_pending(False)
                    expected = seq + 1
                else:
                    if pending_break is not None:
                        resolve_pending(False)
                    flagged = True
                    if seq > expected:
                        if rec_prev == prev_hex and not prev_flagged:
                            add(FaultKind.CHAIN_BROKEN,
                                f"record {expected} was modified: it chains to record "
                                f"{expected - 1} but claims seq {seq}", seq=expected)
                            expected += 1
                        else:
                            if len(gaps) >= _MAX_OPEN_GAPS:
                                a, b = gaps.pop(0)
                                add(FaultKind.MISSING_RECORD,
                                    f"records {a}..{b - 1} are missing", seq=a)
                            gaps.append([expected, seq])
                            expected = seq + 1
                    else:
                        slot = seq & window_mask
                        known = ring_hash[slot] if ring_seq[slot] == seq else None
                        if known == line_hex:
                            add(FaultKind.DUPLICATE_RECORD,
                                f"record {seq} appears again (identical copy)", seq=seq)
                        elif known is not None:
                            add(FaultKind.CHAIN_BROKEN,
                                f"two different records claim seq {seq}: one was inserted "
                                "or modified", seq=seq)
                        else:
                            for gap in gaps:
                                if gap[0] <= seq < gap[1]:
                                    add(FaultKind.OUT_OF_ORDER,
                                        f"record {seq} appears after record {gap[1]}: "
                                        "records were reordered", seq=gap[0])
                                    if seq == gap[0]:
                                        gap[0] += 1
                                    elif seq == gap[1] - 1:
                                        gap[1] -= 1
                                    else:
                                        gaps.append([seq + 1, gap[1]])
                                        gap[1] = seq
                                    gaps[:] = [g for g in gaps if g[0] < g[1]]
                                    break
                            else:
                                add(FaultKind.OUT_OF_ORDER,
                                    f"record {seq} appears after record {expected - 1}",
                                    seq=seq)
                slot = seq & window_mask
                if ring_seq[slot] != seq:  # keep the first record seen with this seq
                    ring_seq[slot] = seq
                    ring_hash[slot] = line_hex
                prev_hex = line_hex
                prev_flagged = flagged
        digests.append((f"{RECORDS_DIR}/{file_path.name}", file_hash.hexdigest()))

    if pending_break is not None:
        resolve_pending(False)
    for a, b in gaps:
        add(FaultKind.MISSING_RECORD, f"records {a}..{b - 1} are missing", seq=a)
    if progress is not None and (n == 0 or n % _PROGRESS_EVERY):
        progress(n)
    return n, digests


# --- inclusion proofs --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InclusionResult:
    """A verified inclusion proof: the record (if the proof carried it) is in the log."""

    seq: int
    tree_size: int
    leaf_hash: bytes
    checkpoint: Checkpoint
    record: AuditRecord | None


_MAX_PROOF_JSON = 64 * 1024


def make_inclusion_proof(
    leaves: merkle.LeafSource,
    seq: int,
    checkpoint_note: str,
    record: bytes | None = None,
) -> dict[str, Any]:
    """Proof (for ``kms audit prove SEQ``) that record ``seq`` is in the signed checkpoint.

    ``leaves``: the leaf hashes (a sequence or ``get(i)``) of at least the checkpoint's
    size. ``record``: the record's canonical bytes, included as ``leaf`` (base64) so the
    proof is self-contained. Output: ``{"checkpoint": note, "leaf": base64 | absent,
    "leaf_hash": hex, "proof": [hex...], "seq": n, "tree_size": n, "v": 1}``.
    """
    cp = parse_checkpoint(parse_note(checkpoint_note).text)
    if not 0 <= seq < cp.size:
        raise ValueError(f"record {seq} is not covered by the checkpoint of size {cp.size}")
    get = leaves if callable(leaves) else leaves.__getitem__
    leaf = get(seq)
    if record is not None and merkle.leaf_hash(record) != leaf:
        raise ValueError("record bytes do not match the leaf hash at seq")
    path = merkle.inclusion_proof(seq, cp.size, leaves)
    out: dict[str, Any] = {
        "checkpoint": checkpoint_note,
        "leaf_hash": leaf.hex(),
        "proof": [p.hex() for p in path],
        "seq": seq,
        "tree_size": cp.size,
        "v": 1,
    }
    if record is not None:
        out["leaf"] = base64.b64encode(record).decode("ascii")
    return out


def _hex32(value: object, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise InvalidProofError(f"{what} must be 64 hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InvalidProofError(f"{what} must be 64 hex characters") from None


def verify_inclusion_proof(
    proof_json: str | bytes | Mapping[str, Any],
    public_key: ec.EllipticCurvePublicKey | bytes,
    key_name: str | None = None,
) -> InclusionResult:
    """Verify a ``kms audit prove`` proof: the note signature, then the inclusion path.

    ``public_key`` is a P-256 key or its PEM; ``key_name`` defaults to the checkpoint's
    origin. Raises :class:`InvalidProofError`, a ``CheckpointError`` (bad note or
    signature) or ``RecordFormatError`` (the embedded record is not canonical).
    """
    if isinstance(proof_json, str | bytes):
        if len(proof_json) > _MAX_PROOF_JSON:
            raise InvalidProofError("proof too large")
        try:
            obj: Any = json.loads(proof_json)
        except ValueError:
            raise InvalidProofError("proof is not JSON") from None
    else:
        obj = dict(proof_json)
    if not isinstance(obj, dict):
        raise InvalidProofError("proof must be a JSON object")
    if obj.get("v", 1) != 1:
        raise InvalidProofError("unsupported proof version")
    seq, tree_size, note = obj.get("seq"), obj.get("tree_size"), obj.get("checkpoint")
    if not isinstance(seq, int) or not isinstance(tree_size, int) or isinstance(seq, bool):
        raise InvalidProofError("seq and tree_size must be integers")
    if not isinstance(note, str):
        raise InvalidProofError("checkpoint must be the signed note text")
    path_hex = obj.get("proof")
    if not isinstance(path_hex, list) or len(path_hex) > 64:
        raise InvalidProofError("proof must be a list of at most 64 hashes")
    path = [_hex32(p, "proof hash") for p in path_hex]

    if isinstance(public_key, bytes):
        public_key = load_public_key_pem(public_key)
    name = key_name
    if name is None:
        name = parse_checkpoint(parse_note(note).text).origin
    cp = verify_note(note, public_key, name)
    if cp.size != tree_size:
        raise InvalidProofError(f"proof is for size {tree_size}, checkpoint has {cp.size}")

    record: AuditRecord | None = None
    leaf: bytes | None = None
    if "leaf" in obj:
        try:
            raw = base64.b64decode(obj["leaf"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidProofError("leaf must be base64 record bytes") from None
        record = decode(raw)
        if record.seq != seq:
            raise InvalidProofError(f"embedded record has seq {record.seq}, not {seq}")
        leaf = merkle.leaf_hash(raw)
    if "leaf_hash" in obj:
        given = _hex32(obj["leaf_hash"], "leaf_hash")
        if leaf is not None and given != leaf:
            raise InvalidProofError("leaf_hash does not match the embedded record")
        leaf = given
    if leaf is None:
        raise InvalidProofError("proof carries neither leaf nor leaf_hash")
    merkle.verify_inclusion(seq, tree_size, leaf, path, cp.root)
    return InclusionResult(
        seq=seq, tree_size=tree_size, leaf_hash=leaf, checkpoint=cp, record=record
    )
