"""Offline verifier: a 10 000-record export and a tamper suite, plus inclusion proofs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import rfc8785

from kms.audit import merkle
from kms.audit.errors import InvalidProofError, NoteSignatureError
from kms.audit.export_format import checkpoint_file_name, record_file_name, write_export
from kms.audit.record import Actor, ChainHead, build_record, decode, encode, record_hash
from kms.audit.verify import (
    EXIT_INCOMPLETE,
    EXIT_INVALID,
    EXIT_VALID,
    FaultKind,
    VerifyReport,
    format_report,
    make_inclusion_proof,
    verify_export,
    verify_inclusion_proof,
)

from .synthetic import KEY_NAME, ORIGIN, Signer, make_records, notes_for

N = 10_000
EVERY = 1_000


@dataclass(frozen=True)
class Base:
    path: Path
    records: list[bytes]
    notes: dict[int, str]
    signer: Signer


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    signer = Signer.generate()
    records = list(make_records(N))
    notes = notes_for(records, signer, EVERY)
    path = tmp_path_factory.mktemp("audit") / "export"
    write_export(path, records, notes, signer.pem, ORIGIN, KEY_NAME)
    by_size = {int(n.split("\n")[1]): n for n in notes}
    return Base(path, records, by_size, signer)


@pytest.fixture
def export(base: Base, tmp_path: Path) -> Path:
    """A private copy of the base export for one tamper case."""
    dest = tmp_path / "export"
    shutil.copytree(base.path, dest)
    return dest


def _rewrite_records(export: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    path = export / record_file_name(0)
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"".join(line + b"\n" for line in change(lines)))


def _verify(base: Base, export: Path, **kwargs: object) -> VerifyReport:
    return verify_export(export, base.signer.pem, **kwargs)  # type: ignore[arg-type]


def _assert_first(report: VerifyReport, kind: FaultKind, seq: int | None,
                  checkpoint: int | None = None) -> None:
    assert report.status == "invalid", format_report(report)
    assert report.exit_code == EXIT_INVALID
    first = report.first_fault
    assert first is not None
    assert (first.kind, first.seq) == (kind, seq), format_report(report)
    if checkpoint is not None:
        assert first.checkpoint == checkpoint, format_report(report)


# --- untouched ---------------------------------------------------------------------------

def test_untouched_export_is_valid(base: Base) -> None:
    seen: list[int] = []
    report = verify_export(base.path, base.signer.pem, progress=seen.append)
    assert report.status == "valid", format_report(report)
    assert report.exit_code == EXIT_VALID
    assert report.first_fault is None and report.fault_count == 0
    assert report.record_count == N and report.checkpoint_count == N // EVERY
    assert report.latest_checkpoint_size == N and report.uncovered_records == 0
    assert report.latest_root == merkle.root_of(merkle.leaf_hash(r) for r in base.records).hex()
    assert report.key_source == "argument" and not report.warnings
    assert seen == [N]  # every 10 000 records and at the end, never twice
    as_json = json.loads(report.to_json())
    assert as_json["status"] == "valid" and as_json["exit_code"] == 0
    assert "VALID" in format_report(report)


def test_layout(base: Base) -> None:
    manifest = json.loads((base.path / "manifest.json").read_text())
    assert manifest["record_count"] == N and manifest["origin"] == ORIGIN
    assert manifest["latest_checkpoint"]["size"] == N
    assert (base.path / "records" / "records-000000.jsonl").read_bytes().count(b"\n") == N
    assert (base.path / checkpoint_file_name(N)).read_text() == base.notes[N]
    assert (base.path / "public-key.pem").read_bytes() == base.signer.pem


def test_key_from_the_export_is_used_with_a_warning(base: Base) -> None:
    report = verify_export(base.path)
    assert report.status == "valid"
    assert report.key_source == "export" and report.warnings


def test_another_key_fails_every_checkpoint(base: Base) -> None:
    report = verify_export(base.path, Signer.generate().pem)
    assert report.status == "invalid"
    kinds = {f.kind for f in report.faults}
    assert FaultKind.BAD_SIGNATURE in kinds
    assert sum(f.kind == FaultKind.BAD_SIGNATURE for f in report.faults) == N // EVERY


# --- record tampering ---------------------------------------------------------------------

def test_one_byte_changed(base: Base, export: Path) -> None:
    def change(lines: list[bytes]) -> list[bytes]:
        assert b'"key_id":"key-' in lines[4321]
        lines[4321] = lines[4321].replace(b'"key_id":"key-', b'"key_id":"kez-')
        return lines

    _rewrite_records(export, change)
    report = _verify(base, export)
    _assert_first(report, FaultKind.CHAIN_BROKEN, 4321)
    kinds = {f.kind for f in report.faults}
    assert FaultKind.CHECKPOINT_ROOT_MISMATCH in kinds  # checkpoints 5000..10000
    assert FaultKind.MANIFEST_MISMATCH in kinds  # the file hash changed too


def test_one_byte_changed_breaking_json(base: Base, export: Path) -> None:
    def change(lines: list[bytes]) -> list[bytes]:
        lines[4321] = b"[" + lines[4321][1:]
        return lines

    _rewrite_records(export, change)
    _assert_first(_verify(base, export), FaultKind.MALFORMED, 4321)


def test_op_changed_and_recanonicalized(base: Base, export: Path) -> None:
    def change(lines: list[bytes]) -> list[bytes]:
        rec = decode(lines[777])
        other = "key.destroy" if rec.op != "key.destroy" else "key.create"
        obj = rec.to_json() | {"op": other}
        lines[777] = rfc8785.dumps(obj)
        decode(lines[777])  # still a perfectly canonical record
        return lines

    _rewrite_records(export, change)
    _assert_first(_verify(base, export), FaultKind.CHAIN_BROKEN, 777)


def test_prev_field_changed(base: Base, export: Path) -> None:
    def change(lines: list[bytes]) -> list[bytes]:
        obj = decode(lines[2500]).to_json() | {"prev": "ab" * 32}
        lines[2500] = rfc8785.dumps(obj)
        return lines

    _rewrite_records(export, change)
    _assert_first(_verify(base, export), FaultKind.CHAIN_BROKEN, 2500)


def test_non_canonical_whitespace(base: Base, export: Path) -> None:
    def change(lines: list[bytes]) -> list[bytes]:
        lines[1234] = lines[1234].replace(b'"v":1', b'"v": 1')
        return lines

    _rewrite_records(export, change)
    _assert_first(_verify(base, export), FaultKind.NON_CANONICAL, 1234)


def test_record_deleted(base: Base, export: Path) -> None:
    _rewrite_records(export, lambda lines: lines[:5000] + lines[5001:])
    report = _verify(base, export)
    _assert_first(report, FaultKind.MISSING_RECORD, 5000)
    assert FaultKind.CHECKPOINT_BEYOND_LOG in {f.kind for f in report.faults}


def _forged(base: Base, seq: int) -> bytes:
    head = ChainHead(seq - 1, record_hash(base.records[seq - 1]))
    return encode(build_record(head, time="2025-01-01T01:00:00.000000Z", op="key.destroy",
                               outcome="ok", actor=Actor(kind="cli", id="mallory"),
                               key_id="key-1"))


def test_forged_record_inserted_before(base: Base, export: Path) -> None:
    forged = _forged(base, 3000)
    _rewrite_records(export, lambda lines: [*lines[:3000], forged, *lines[3000:]])
    _assert_first(_verify(base, export), FaultKind.CHAIN_BROKEN, 3000)


def test_forged_record_inserted_after(base: Base, export: Path) -> None:
    forged = _forged(base, 3000)
    _rewrite_records(export, lambda lines: [*lines[:3001], forged, *lines[3001:]])
    _assert_first(_verify(base, export), FaultKind.CHAIN_BROKEN, 3000)


def test_record_duplicated(base: Base, export: Path) -> None:
    _rewrite_records(export, lambda lines: [*lines[:6001], lines[6000], *lines[6001:]])
    _assert_first(_verify(base, export), FaultKind.DUPLICATE_RECORD, 6000)


def test_two_records_swapped(base: Base, export: Path) -> None:
    def change(lines: list[bytes]) -> list[bytes]:
        lines[7000], lines[7001] = lines[7001], lines[7000]
        return lines

    _rewrite_records(export, change)
    report = _verify(base, export)
    _assert_first(report, FaultKind.OUT_OF_ORDER, 7000)
    assert FaultKind.MISSING_RECORD not in {f.kind for f in report.faults}


# --- truncation ---------------------------------------------------------------------------

def test_tail_dropped_under_a_checkpoint_is_invalid(base: Base, export: Path) -> None:
    _rewrite_records(export, lambda lines: lines[:9500])
    report = _verify(base, export)
    _assert_first(report, FaultKind.CHECKPOINT_BEYOND_LOG, 9500, checkpoint=10_000)


def test_tail_dropped_past_the_last_checkpoint_is_incomplete(base: Base, tmp_path: Path) -> None:
    # Whoever controls the export can drop records and the checkpoints covering them and
    # write a matching manifest: only "incomplete" can be said without an outside anchor.
    out = tmp_path / "truncated"
    write_export(out, base.records[:9500], [base.notes[s] for s in range(1000, 9001, 1000)],
                 base.signer.pem, ORIGIN, KEY_NAME)
    report = _verify(base, out)
    assert report.status == "incomplete", format_report(report)
    assert report.exit_code == EXIT_INCOMPLETE
    assert report.uncovered_records == 500 and report.latest_checkpoint_size == 9000
    assert report.first_fault is None
    # With the checkpoint the auditor already holds, the truncation is a proven fault.
    anchored = _verify(base, out, trusted_checkpoints=[base.notes[10_000]])
    _assert_first(anchored, FaultKind.CHECKPOINT_BEYOND_LOG, 9500, checkpoint=10_000)
    assert FaultKind.STALE_CHECKPOINT in {f.kind for f in anchored.faults}


def test_last_checkpoint_replaced_by_an_older_one(base: Base, export: Path) -> None:
    (export / checkpoint_file_name(N)).write_text(base.notes[9000])
    report = _verify(base, export)
    _assert_first(report, FaultKind.STALE_CHECKPOINT, None, checkpoint=10_000)
    assert report.latest_checkpoint_size == 9000


def test_checkpoint_resigned_with_another_key(base: Base, export: Path) -> None:
    cr = merkle.CompactRange()
    cr.extend(merkle.leaf_hash(r) for r in base.records[:5000])
    (export / checkpoint_file_name(5000)).write_text(Signer.generate().note(5000, cr.root()))
    report = _verify(base, export)
    _assert_first(report, FaultKind.BAD_SIGNATURE, None, checkpoint=5000)


def test_checkpoint_body_altered(base: Base, export: Path) -> None:
    path = export / checkpoint_file_name(3000)
    path.write_text(path.read_text().replace("\n3000\n", "\n2999\n"))
    _assert_first(_verify(base, export), FaultKind.BAD_SIGNATURE, None, checkpoint=3000)


# --- forks --------------------------------------------------------------------------------

def _rewritten_from(base: Base, k: int) -> tuple[list[bytes], dict[int, str]]:
    head = ChainHead(k - 1, record_hash(base.records[k - 1]))
    tail = list(make_records(N - k, start=k, head=head, salt="-rewritten"))
    records = base.records[:k] + tail
    notes = {int(n.split("\n")[1]): n for n in notes_for(records, base.signer, EVERY)}
    return records, notes


def test_fork_between_checkpoints_in_the_export(base: Base, export: Path) -> None:
    records, new_notes = _rewritten_from(base, 5000)
    path = export / record_file_name(0)
    path.write_bytes(b"".join(r + b"\n" for r in records))
    # Old checkpoint 6000 stays; 7000.. are newly (validly) signed over the rewritten log.
    for size in range(7000, N + 1, EVERY):
        (export / checkpoint_file_name(size)).write_text(new_notes[size])
    report = _verify(base, export)
    _assert_first(report, FaultKind.FORK, 5000, checkpoint=6000)


def test_fork_against_a_trusted_checkpoint(base: Base, tmp_path: Path) -> None:
    records, new_notes = _rewritten_from(base, 5000)
    out = tmp_path / "forked"
    write_export(out, records, list(new_notes.values()), base.signer.pem, ORIGIN, KEY_NAME)
    alone = _verify(base, out)
    assert alone.status == "valid"  # a complete rewrite signed by the log key is self-consistent
    report = _verify(base, out, trusted_checkpoints=[base.notes[6000]])
    _assert_first(report, FaultKind.FORK, 5000, checkpoint=6000)
    # The rewrite is located between the last checkpoint both views agree on and the
    # trusted one: with the old 8000 only, the new 7000 still matches, so 7000..7999.
    later = _verify(base, out, trusted_checkpoints=[base.notes[8000]])
    _assert_first(later, FaultKind.FORK, 7000, checkpoint=8000)


# --- manifest -----------------------------------------------------------------------------

def test_manifest_count_edited(base: Base, export: Path) -> None:
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["record_count"] = N + 1
    (export / "manifest.json").write_text(json.dumps(manifest))
    _assert_first(_verify(base, export), FaultKind.MANIFEST_MISMATCH, None)


@pytest.mark.parametrize("field", ["latest_checkpoint", "checkpoints", "record_count"])
def test_manifest_field_missing_is_a_fault_not_a_crash(base: Base, export: Path,
                                                        field: str) -> None:
    """A bit flip in a field name keeps the JSON valid (found by the fuzz test: a
    missing ``latest_checkpoint`` raised KeyError)."""
    manifest = json.loads((export / "manifest.json").read_text())
    del manifest[field]
    (export / "manifest.json").write_text(json.dumps(manifest))
    _assert_first(_verify(base, export), FaultKind.MANIFEST_INVALID, None)


def test_manifest_missing(base: Base, export: Path) -> None:
    (export / "manifest.json").unlink()
    report = _verify(base, export)
    _assert_first(report, FaultKind.MANIFEST_INVALID, None)


# --- inclusion proofs ---------------------------------------------------------------------

def test_inclusion_proof_round_trip_and_tampering(base: Base) -> None:
    leaves = [merkle.leaf_hash(r) for r in base.records]
    note = base.notes[8000]
    proof = make_inclusion_proof(leaves, 4321, note, record=base.records[4321])
    text = json.dumps(proof)
    result = verify_inclusion_proof(text, base.signer.pem)
    assert result.seq == 4321 and result.tree_size == 8000
    assert result.record is not None and result.record.seq == 4321
    # By leaf hash only, from a getter.
    bare = make_inclusion_proof(leaves.__getitem__, 0, note)
    assert "leaf" not in bare
    verify_inclusion_proof(bare, base.signer.public_key)

    wrong_leaf = dict(proof, leaf=make_inclusion_proof(leaves, 4322, note,
                                                       record=base.records[4322])["leaf"])
    with pytest.raises(InvalidProofError):
        verify_inclusion_proof(wrong_leaf, base.signer.pem)
    bad_path = dict(proof, proof=[p[:-1] + ("0" if p[-1] != "0" else "1") for p in proof["proof"]])
    with pytest.raises(InvalidProofError):
        verify_inclusion_proof(bad_path, base.signer.pem)
    with pytest.raises(InvalidProofError):
        verify_inclusion_proof(dict(proof, tree_size=7999), base.signer.pem)
    with pytest.raises(NoteSignatureError):
        verify_inclusion_proof(proof, Signer.generate().pem)
    with pytest.raises(ValueError):
        make_inclusion_proof(leaves, 8000, note)


def test_first_record_modified(base: Base, export: Path) -> None:
    def change(lines: list[bytes]) -> list[bytes]:
        obj = json.loads(lines[0]) | {"prev": "11" * 32}
        lines[0] = rfc8785.dumps(obj)
        return lines

    _rewrite_records(export, change)
    _assert_first(_verify(base, export), FaultKind.CHAIN_BROKEN, 0)


def test_last_line_without_newline_and_crlf(base: Base, export: Path) -> None:
    path = export / record_file_name(0)
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    _assert_first(_verify(base, export), FaultKind.NON_CANONICAL, N - 1)
    lines = data.split(b"\n")
    lines[10] += b"\r"
    path.write_bytes(b"\n".join(lines))
    _assert_first(_verify(base, export), FaultKind.NON_CANONICAL, 10)
