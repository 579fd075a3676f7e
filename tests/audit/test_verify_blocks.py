"""The verifier's block fast path gives exactly the report of the line-by-line path.

The fast path (kms/audit/verify.py: runs of canonical lines, bulk hashing, the Merkle tree
a level at a time) must only ever be a faster way to reach the same state. Each case
verifies an export twice, once with the fast path switched off (no canonical runs: every
line through the general path), and compares the whole report and the progress calls;
small read blocks put lines and runs across block boundaries.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kms.audit import merkle
from kms.audit import verify as v
from kms.audit.export_format import record_file_name
from kms.audit.record import Actor, ChainHead, RequestMetadata, build_record, encode, record_hash

from .synthetic import Signer, build_export, notes_for

N = 1500
EVERY = 250
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _records(n: int, detail_every: int) -> list[bytes]:
    """Records that mostly match the canonical pattern; every `detail_every`-th one has a
    detail (and so takes the JSON path)."""
    out: list[bytes] = []
    head: ChainHead | None = None
    for i in range(n):
        denied = detail_every and i % detail_every == detail_every - 1
        rec = build_record(
            head, time=T0 + timedelta(microseconds=7 * i), op="xks.encrypt",
            outcome="denied" if denied else "ok",
            actor=Actor(kind="xks_credential", id=f"AKID{i % 5}"),
            key_id="k", key_version=1, store="default",
            error="AccessDeniedException" if denied else None,
            request=RequestMetadata(kmsRequestId=f"r-{i}", kmsOperation="Encrypt"),
            context_hash=hashlib.sha256(str(i).encode()).hexdigest(), latency_us=i,
            detail={"rule": "deny"} if denied else {})
        data = encode(rec)
        out.append(data)
        head = ChainHead(rec.seq, record_hash(data))
    return out


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate()


@pytest.fixture(scope="module", params=[0, 7, 97], ids=["all-canonical", "detail-7", "detail-97"])
def base(request: pytest.FixtureRequest, signer: Signer,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = _records(N, request.param)
    path = tmp_path_factory.mktemp("blocks") / "export"
    return build_export(path, records, notes_for(records, signer, EVERY), signer)


def _lines(export: Path) -> list[bytes]:
    return (export / record_file_name(0)).read_bytes().split(b"\n")[:-1]


def _write(export: Path, lines: list[bytes], *, final_newline: bool = True) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    (export / record_file_name(0)).write_bytes(data)


def _both(export: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch,
          chunk: int) -> tuple[dict[str, object], list[int]]:
    """Verify with and without the fast path; assert equal; return the report."""
    monkeypatch.setattr(v, "_CHUNK", chunk)
    seen_fast: list[int] = []
    fast = v.verify_export(export, signer.pem, seen_fast.append)
    with monkeypatch.context() as m:
        m.setattr(v, "_canonical_runs", lambda buf, end: [])
        seen_slow: list[int] = []
        slow = v.verify_export(export, signer.pem, seen_slow.append)
    assert fast.to_dict() == slow.to_dict()
    assert seen_fast == seen_slow
    return fast.to_dict(), seen_fast


def _forged(after: bytes) -> bytes:
    """A well-formed canonical record chained after `after` (as an inserter would make)."""
    rec = build_record(ChainHead(v._loads(after.decode())["seq"], record_hash(after)),
                       time=T0, op="key.revoke", outcome="ok", actor=Actor(kind="cli", id="x"))
    return encode(rec)


Tamper = Callable[[list[bytes], random.Random], list[bytes]]


def _delete(lines: list[bytes], rnd: random.Random) -> list[bytes]:
    i = rnd.randrange(len(lines))
    return lines[:i] + lines[i + 1 + rnd.choice([0, 0, 3, 40]):]


def _duplicate(lines: list[bytes], rnd: random.Random) -> list[bytes]:
    i = rnd.randrange(len(lines))
    j = min(len(lines), i + rnd.choice([1, 5, 300, 5000]))
    return [*lines[:j], lines[i], *lines[j:]]


def _swap(lines: list[bytes], rnd: random.Random) -> list[bytes]:
    i, j = sorted(rnd.sample(range(len(lines)), 2))
    out = list(lines)
    out[i], out[j] = out[j], out[i]
    return out


def _flip_byte(lines: list[bytes], rnd: random.Random) -> list[bytes]:
    i = rnd.randrange(len(lines))
    line = bytearray(lines[i])
    line[rnd.randrange(len(line))] ^= 1 << rnd.randrange(7)
    return [*lines[:i], bytes(line), *lines[i + 1:]]


def _insert_forged(lines: list[bytes], rnd: random.Random) -> list[bytes]:
    i = rnd.randrange(len(lines))
    return [*lines[:i + 1], _forged(lines[i]), *lines[i + 1:]]


def _truncate(lines: list[bytes], rnd: random.Random) -> list[bytes]:
    return lines[:rnd.randrange(1, len(lines))]


def _move_block(lines: list[bytes], rnd: random.Random) -> list[bytes]:
    i = rnd.randrange(len(lines) - 50)
    block = lines[i:i + 50]
    rest = lines[:i] + lines[i + 50:]
    j = rnd.randrange(len(rest))
    return rest[:j] + block + rest[j:]


def _whitespace(lines: list[bytes], rnd: random.Random) -> list[bytes]:
    i = rnd.randrange(len(lines))
    return [*lines[:i], lines[i].replace(b",", b", ", 1), *lines[i + 1:]]


TAMPERS: dict[str, Tamper] = {
    "delete": _delete, "duplicate": _duplicate, "swap": _swap, "flip_byte": _flip_byte,
    "insert_forged": _insert_forged, "truncate": _truncate, "move_block": _move_block,
    "whitespace": _whitespace,
}


def test_untouched(base: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    for chunk in (512, 4096, 1 << 22):
        report, seen = _both(base, signer, monkeypatch, chunk)
        assert report["status"] == "valid" and report["record_count"] == N
        assert seen == [N]


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered(base: Path, signer: Signer, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    rnd = random.Random(name)
    for case in range(6):
        export = tmp_path / f"export-{case}"
        shutil.copytree(base, export)
        lines = TAMPERS[name](_lines(export), rnd)
        if name == "move_block" and case % 2:
            lines = TAMPERS["flip_byte"](lines, rnd)
        _write(export, lines, final_newline=case != 5)
        report, _ = _both(export, signer, monkeypatch, rnd.choice([700, 3000, 1 << 16]))
        assert report["status"] in ("invalid", "incomplete")


def test_many_faults_stay_linear(base: Path, signer: Signer, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every other record's prev altered: the fast path gives up at each break without
    rescanning the rest of the block (equal reports; and it finishes)."""
    export = tmp_path / "export"
    shutil.copytree(base, export)
    lines = _lines(export)
    out = []
    for k, line in enumerate(lines):
        if k % 2:
            at = line.index(b'"prev":"') + 8
            line = line[:at] + (b"0" if line[at:at + 1] != b"0" else b"1") + line[at + 1:]
        out.append(line)
    _write(export, out)
    report, _ = _both(export, signer, monkeypatch, 1 << 22)
    assert report["status"] == "invalid"
    assert report["first_fault"]["kind"] == "chain_broken"  # type: ignore[index]


def test_extend_right_edge_matches_appending_one_by_one() -> None:
    rnd = random.Random(1)
    for _ in range(400):
        size = rnd.choice([0, 1, 2, 3, 7, 8, rnd.randrange(2000)])
        add = rnd.choice([0, 1, 2, 5, rnd.randrange(600)])
        leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(size + add)]
        cr = merkle.CompactRange()
        for leaf in leaves[:size]:
            cr.append(leaf)
        stack = list(cr.hashes)
        merkle.extend_right_edge(stack, size, leaves[size:])
        bulk = merkle.CompactRange(size, cr.hashes)
        bulk.extend(leaves[size:])
        for leaf in leaves[size:]:
            cr.append(leaf)
        assert stack == list(cr.hashes) == list(bulk.hashes)
        assert bulk == cr


def test_runs_cover_exactly_the_canonical_lines() -> None:
    lines = _records(200, 9)
    lines[50] = lines[50].replace(b",", b", ", 1)
    buf = b"".join(line + b"\n" for line in lines)
    runs = v._canonical_runs(buf, len(buf))
    covered = {i for r in runs for i in range(r.first, r.stop)}
    assert covered == {i for i, line in enumerate(lines)
                       if v._CANONICAL_LINE.fullmatch(line) is not None}
    for r in runs:
        for k in range(r.first, r.stop):
            m = v._CANONICAL_LINE.fullmatch(lines[k])
            assert m is not None
            assert r.prevs[k - r.first] == m.group(3).decode()
            assert r.seqs[k - r.first] == m.group(4).decode()
