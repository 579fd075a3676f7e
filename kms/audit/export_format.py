"""Audit export directory layout and its writer (no database, no HSM).

Layout of ``OUT_DIR`` (format version 1, documented for auditors in docs/audit.md)::

    OUT_DIR/
      manifest.json                     canonical JSON (RFC 8785) + "\\n", see below
      public-key.pem                    EC P-256 SubjectPublicKeyInfo of the checkpoint key
      records/records-000000.jsonl      records 0 .. 99 999
      records/records-000001.jsonl      records 100 000 .. 199 999, ...
      checkpoints/00000000000000001000.note   one signed checkpoint note per file,
      checkpoints/...                         named by its tree size (20 digits)

Each record file holds one record per line: exactly the canonical bytes that are hashed
(chain and Merkle leaf), followed by ``\\n``. A new file starts every 100 000 records.

``manifest.json``::

    {"checkpoints": [{"path": "checkpoints/...note", "sha256": hex, "size": n}, ...],
     "files": [{"bytes": n, "path": "records/records-000000.jsonl", "sha256": hex}, ...],
     "format": "cmk-audit-export", "format_version": 1,
     "key_id": "<8 hex: signed-note key id>", "key_name": "...",
     "latest_checkpoint": {"path": ..., "sha256": hex, "size": n} | null,
     "origin": "...", "record_count": n, "records_per_file": 100000}

``files`` lists every record file and ``public-key.pem``; ``checkpoints`` every note file.
The manifest is not signed: it lets the verifier notice files that were swapped or
removed after export, but the trust anchors are the checkpoint signatures and the public
key the auditor obtained out of band.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import rfc8785

from kms.audit.checkpoint import key_id_from_pem, load_public_key_pem, verify_note
from kms.audit.errors import ExportError

__all__ = [
    "CHECKPOINT_DIR",
    "EXPORT_FORMAT",
    "EXPORT_FORMAT_VERSION",
    "MANIFEST_NAME",
    "PUBLIC_KEY_NAME",
    "RECORDS_DIR",
    "RECORDS_PER_FILE",
    "ExportSummary",
    "checkpoint_file_name",
    "parse_checkpoint_file_name",
    "parse_record_file_name",
    "record_file_name",
    "write_export",
]

EXPORT_FORMAT: Final = "cmk-audit-export"
EXPORT_FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "manifest.json"
PUBLIC_KEY_NAME: Final = "public-key.pem"
RECORDS_DIR: Final = "records"
CHECKPOINT_DIR: Final = "checkpoints"
RECORDS_PER_FILE: Final = 100_000
MAX_MANIFEST_BYTES: Final = 64 * 1024 * 1024

_RECORD_FILE_RE: Final = re.compile(r"\Arecords-(\d{6})\.jsonl\Z")
_CHECKPOINT_FILE_RE: Final = re.compile(r"\A(\d{20})\.note\Z")


def record_file_name(index: int) -> str:
    """Path (relative to OUT_DIR) of record file number ``index``."""
    return f"{RECORDS_DIR}/records-{index:06d}.jsonl"


def parse_record_file_name(name: str) -> int | None:
    """File number of a record file name (basename), or None if it is not one."""
    m = _RECORD_FILE_RE.match(name)
    return int(m.group(1)) if m else None


def checkpoint_file_name(size: int) -> str:
    """Path (relative to OUT_DIR) of the note for a checkpoint of ``size`` leaves."""
    return f"{CHECKPOINT_DIR}/{size:020d}.note"


def parse_checkpoint_file_name(name: str) -> int | None:
    """Tree size encoded in a checkpoint file name (basename), or None."""
    m = _CHECKPOINT_FILE_RE.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What :func:`write_export` wrote."""

    out_dir: Path
    record_count: int
    record_files: int
    checkpoint_sizes: tuple[int, ...]
    manifest: dict[str, Any]


def _write_file(path: Path, data: bytes) -> str:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def write_export(
    out_dir: str | os.PathLike[str],
    records_bytes_iter: Iterable[bytes],
    checkpoint_notes: Iterable[str],
    public_key_pem: bytes,
    origin: str,
    key_name: str,
) -> ExportSummary:
    """Write an export directory (layout in this module's docstring).

    ``records_bytes_iter`` yields the canonical bytes of records 0, 1, ... in order (it is
    consumed once, streaming); ``checkpoint_notes`` are signed checkpoint notes. Every
    note is verified with ``public_key_pem``/``key_name``/``origin`` and must not be
    beyond the number of records, so a broken export is never written. ``out_dir`` must
    not exist or be empty. The caller should sign a fresh checkpoint at the current log
    size first, or the export verifies as "incomplete".
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty directory")
    public_key = load_public_key_pem(public_key_pem)
    notes: dict[int, str] = {}
    for note in checkpoint_notes:
        cp = verify_note(note, public_key, key_name, origin=origin)
        if cp.size in notes and notes[cp.size] != note:
            raise ExportError(f"two different checkpoints for size {cp.size}")
        notes[cp.size] = note

    (out / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
    (out / CHECKPOINT_DIR).mkdir(exist_ok=True)

    files: list[dict[str, Any]] = []
    count = 0
    file_index = 0
    current: Any = None
    hasher: Any = None
    size_in_file = 0

    def close_current() -> None:
        nonlocal current, hasher, size_in_file
        if current is None:
            return
        current.flush()
        os.fsync(current.fileno())
        current.close()
        files.append(
            {
                "bytes": size_in_file,
                "path": record_file_name(file_index - 1),
                "sha256": hasher.hexdigest(),
            }
        )
        current, hasher, size_in_file = None, None, 0

    try:
        for data in records_bytes_iter:
            if b"\n" in data or b"\r" in data or not data:
                raise ExportError(f"record {count} is not one canonical JSON line")
            if count % RECORDS_PER_FILE == 0:
                close_current()
                current = open(out / record_file_name(file_index), "xb")  # noqa: SIM115
                hasher = hashlib.sha256()
                file_index += 1
            line = data + b"\n"
            current.write(line)
            hasher.update(line)
            size_in_file += len(line)
            count += 1
        close_current()
    finally:
        if current is not None:
            current.close()

    too_big = [size for size in notes if size > count]
    if too_big:
        raise ExportError(f"checkpoint size {max(too_big)} is beyond the {count} records")

    checkpoints: list[dict[str, Any]] = []
    for size in sorted(notes):
        rel = checkpoint_file_name(size)
        digest = _write_file(out / rel, notes[size].encode("utf-8"))
        checkpoints.append({"path": rel, "sha256": digest, "size": size})

    key_digest = _write_file(out / PUBLIC_KEY_NAME, public_key_pem)
    files.append({"bytes": len(public_key_pem), "path": PUBLIC_KEY_NAME, "sha256": key_digest})
    files.sort(key=lambda f: str(f["path"]))

    manifest: dict[str, Any] = {
        "checkpoints": checkpoints,
        "files": files,
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "key_id": key_id_from_pem(public_key_pem).hex(),
        "key_name": key_name,
        "latest_checkpoint": checkpoints[-1] if checkpoints else None,
        "origin": origin,
        "record_count": count,
        "records_per_file": RECORDS_PER_FILE,
    }
    _write_file(out / MANIFEST_NAME, rfc8785.dumps(manifest) + b"\n")
    return ExportSummary(
        out_dir=out,
        record_count=count,
        record_files=file_index,
        checkpoint_sizes=tuple(sorted(notes)),
        manifest=manifest,
    )
