"""The verifier's block fast path gives exactly the report of the line-by-line path.

The fast path (kms/audit/verify.py: runs of canonical lines, bulk hashing, the Merkle tree
a level at a time) must only ever be a faster way to reach the same state, and so must the
scan process that finds the runs (kms/audit/scan_process.py). Each case verifies an export
with the fast path switched off (no canonical runs: every line through the general path),
with it on in-process and, in most cases, with the runs found by the scan process, and
compares the whole reports and the progress calls; small read blocks put lines and runs
across block boundaries.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kms.audit import canonical_lines as cl
from kms.audit import merkle
from kms.audit import scan_process as sp
from kms.audit import verify as v
from kms.audit.export_format import record_file_name
from kms.audit.record import Actor, ChainHead, RequestMetadata, build_record, encode, record_hash

from .synthetic import Signer, build_export, notes_for

N = 1500
EVERY = 250
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _records(n: int, detail_every: int, long_at: int = -1) -> list[bytes]:
    """Records that mostly match the canonical pattern; every `detail_every`-th one has a
    detail (and so takes the JSON path); the one at `long_at` a line over the fast path's
    2,048 bytes (a valid record: its key ARN has 2,000 characters)."""
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
            request=RequestMetadata(kmsRequestId=f"r-{i}", kmsOperation="Encrypt",
                                    kmsKeyArn="a" * 2000 if i == long_at else None),
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


class _Recorded(sp.ScanProcess):
    """The scan process, its instances kept (to check that it scanned)."""

    made: list[sp.ScanProcess] = []  # replaced per test

    def __init__(self) -> None:
        super().__init__()
        self.made.append(self)


def _scanned_by_process(export: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch,
                        ) -> tuple[dict[str, object], list[int], int]:
    """The report and progress calls with the scan process finding the runs, and how
    many blocks it scanned."""
    with monkeypatch.context() as m:
        m.setattr(_Recorded, "made", [])
        m.setattr(v, "ScanProcess", _Recorded)
        seen: list[int] = []
        report = v.verify_export(export, signer.pem, seen.append, scan_process=True)
        (scanner,) = _Recorded.made
    assert not scanner.alive  # closed by verify_export
    return report.to_dict(), seen, scanner.blocks


def _both(export: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch,
          chunk: int, *, process: bool = True) -> tuple[dict[str, object], list[int]]:
    """Verify with and without the fast path (and with the scan process, if
    ``process``); assert equal; return the report."""
    monkeypatch.setattr(v, "_CHUNK", chunk)
    seen_fast: list[int] = []
    fast = v.verify_export(export, signer.pem, seen_fast.append)
    with monkeypatch.context() as m:
        m.setattr(v, "canonical_runs", lambda buf, end, lines: [])
        seen_slow: list[int] = []
        slow = v.verify_export(export, signer.pem, seen_slow.append, scan_process=False)
    assert fast.to_dict() == slow.to_dict()
    assert seen_fast == seen_slow
    if process:
        by_process, seen, blocks = _scanned_by_process(export, signer, monkeypatch)
        assert blocks > 0
        assert by_process == slow.to_dict()
        assert seen == seen_slow
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
        report, _ = _both(export, signer, monkeypatch, rnd.choice([700, 3000, 1 << 16]),
                          process=case in (0, 3))
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
    runs = cl.canonical_runs(buf, len(buf), lines)
    covered = {i for r in runs for i in range(r.first, r.stop)}
    assert covered == {i for i, line in enumerate(lines)
                       if cl.CANONICAL_LINE.fullmatch(line) is not None}
    for r in runs:
        for k in range(r.first, r.stop):
            m = cl.CANONICAL_LINE.fullmatch(lines[k])
            assert m is not None
            assert r.prev(k - r.first) == m.group(3).decode()
            assert r.seqs[k - r.first] == m.group(4).decode()


def test_a_line_over_the_length_bound_is_left_to_the_general_path(
        signer: Signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block pattern has no length bound (the line pattern's lookahead would scan each
    line twice): a run holding a line over FAST_MAX_LINE bytes is left to the general
    path, which verifies the record through JSON; the report is the same."""
    lines = _records(300, 0, long_at=120)
    assert len(lines[120]) > cl.FAST_MAX_LINE
    assert cl.CANONICAL_LINE.fullmatch(lines[120]) is None
    assert re.fullmatch(cl.LINE_BODY, lines[120]) is not None  # all but the length
    buf = b"".join(line + b"\n" for line in lines)
    runs = cl.canonical_runs(buf, len(buf), lines)
    assert not any(r.first <= 120 < r.stop for r in runs)
    head = b"".join(line + b"\n" for line in lines[:100])
    assert [(r.first, r.stop) for r in cl.canonical_runs(head, len(head), lines[:100])] == [
        (0, 100)]  # the same lines without the long one make one run
    export = build_export(tmp_path / "export", lines, notes_for(lines, signer, 100), signer)
    for chunk in (4096, 1 << 22):
        report, _ = _both(export, signer, monkeypatch, chunk)
        assert report["status"] == "valid" and report["record_count"] == 300


def test_the_file_digest_on_its_thread_is_the_files_sha256(tmp_path: Path) -> None:
    """The file's digest (for the manifest) is computed on a second thread: the same
    SHA-256 as hashing the file at once, in order, across chunk boundaries; the thread ends
    once the file has been read, also when the reader gives up half-way."""
    path = tmp_path / "records"
    data = b"".join(_records(40, 0)[i] + b"\n" for i in range(40)) + b"tail without newline"
    path.write_bytes(data)
    hasher = v._ChunkHasher()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(v, "_CHUNK", 1000)
        blocks = list(v._iter_blocks(path, hasher))
    assert blocks[-1] == (b"", 0, [b"tail without newline"], False)
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert not hasher._thread.is_alive()

    dropped = v._ChunkHasher()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(v, "_CHUNK", 1000)
        blocks_iter = v._iter_blocks(path, dropped)
        next(blocks_iter)
        blocks_iter.close()  # what an error in the caller's loop does
    dropped._thread.join(timeout=5)
    assert not dropped._thread.is_alive()


# -- the scan process is only an accelerator ---------------------------------------------


def _slow_report(export: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch,
                 ) -> dict[str, object]:
    with monkeypatch.context() as m:
        m.setattr(v, "canonical_runs", lambda buf, end, lines: [])
        return v.verify_export(export, signer.pem, scan_process=False).to_dict()


class _DiesAfterOneBlock(_Recorded):
    def result(self, line_count: int) -> list[cl.Run] | None:
        if self.blocks == 1 and self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        return super().result(line_count)


def _answering(answer: bytes) -> type[_Recorded]:
    """A scan process whose third answer is ``answer`` instead of its own."""
    class Answering(_Recorded):
        def _recv(self) -> bytes | None:
            real = super()._recv()
            return answer if self._ready and self.blocks == 2 else real

    return Answering


# Out of protocol: not JSON; a run without its seqs; a run past the block's lines; runs
# out of order; a prev short; a seq that is not a number; a seq too many.
_BAD_ANSWERS = [b"[[0", b'[[0, 1, "' + b"a" * 64 + b'"]]', b'[[0, 100000, "", ""]]',
                b'[[2, 3, "' + b"a" * 64 + b'", "2"], [0, 1, "' + b"a" * 64 + b'", "0"]]',
                b'[[0, 1, "abc", "0"]]', b'[[0, 1, "' + b"a" * 64 + b'", "x"]]',
                b'[[0, 1, "' + b"a" * 64 + b'", "0,1"]]']


@pytest.mark.parametrize("broken", [_DiesAfterOneBlock] + [_answering(a) for a in _BAD_ANSWERS],
                         ids=["dies", "not-json", "short-run", "past-the-block", "out-of-order",
                              "short-prev", "bad-seq", "seq-too-many"])
def test_a_failing_scan_process_leaves_the_rest_to_the_verifier(
        base: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch,
        broken: type[_Recorded]) -> None:
    """A scan process that dies or answers out of protocol half-way: the verifier scans
    that block and every later one itself, and the report is the same."""
    monkeypatch.setattr(v, "_CHUNK", 4096)
    expected = _slow_report(base, signer, monkeypatch)
    monkeypatch.setattr(broken, "made", [])
    monkeypatch.setattr(v, "ScanProcess", broken)
    report = v.verify_export(base, signer.pem, scan_process=True)
    (scanner,) = broken.made
    assert report.to_dict() == expected
    assert 1 <= scanner.blocks <= 2  # it scanned until it failed, and no more
    assert not scanner.alive


def test_a_scan_process_that_cannot_start_changes_nothing(
        base: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v, "_CHUNK", 4096)
    expected = _slow_report(base, signer, monkeypatch)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    scanner = sp.ScanProcess()
    assert not scanner.alive and not scanner.wait_ready(0.1)
    assert not scanner.submit(b"{}\n", 3)
    report = v.verify_export(base, signer.pem, scan_process=True)
    assert report.to_dict() == expected


def test_records_over_the_threshold_get_a_scan_process(
        base: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    """``scan_process=None``: a process for records of _SCAN_PROCESS_MIN_BYTES or more
    (none below), closed at the end; the same report whether or not it started in time
    to take blocks (this export is verified before it may have)."""
    monkeypatch.setattr(v, "_CHUNK", 2048)
    expected = _slow_report(base, signer, monkeypatch)
    size = (base / record_file_name(0)).stat().st_size
    monkeypatch.setattr(_Recorded, "made", [])
    monkeypatch.setattr(v, "ScanProcess", _Recorded)
    monkeypatch.setattr(v, "_SCAN_PROCESS_MIN_BYTES", size + 1)
    assert v.verify_export(base, signer.pem).to_dict() == expected
    assert _Recorded.made == []
    monkeypatch.setattr(v, "_SCAN_PROCESS_MIN_BYTES", size)
    assert v.verify_export(base, signer.pem).to_dict() == expected
    assert len(_Recorded.made) == 1 and not _Recorded.made[0].alive


def test_the_scan_process_gets_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's environment is PYTHONPATH alone: not the PIN or database URL that
    the shell running ``kms audit verify`` may hold."""
    monkeypatch.setenv("KMS_PKCS11_PIN", "not-for-the-child")
    monkeypatch.setenv("KMS_DATABASE_URL", "postgresql://u:secret@h/db")
    scanner = sp.ScanProcess()
    try:
        assert scanner.wait_ready()
        assert scanner._proc is not None
        environ = Path(f"/proc/{scanner._proc.pid}/environ").read_bytes().split(b"\0")
        assert [e.split(b"=")[0] for e in environ if e] == [b"PYTHONPATH"]
        block = b"".join(line + b"\n" for line in _records(20, 0))
        assert scanner.submit(block, len(block))
        lines = block.split(b"\n")[:-1]
        got = scanner.result(len(lines))
        assert got is not None
        assert [(r.first, r.stop, r.prevs, r.seqs) for r in got] == [
            (r.first, r.stop, r.prevs, r.seqs) for r in cl.canonical_runs(block, len(block), lines)]
    finally:
        scanner.close()


def test_the_scan_process_does_not_import_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An auditor may run the verifier inside a directory they were handed: a module
    there named like one the process imports is not imported (``python -P``)."""
    marker = tmp_path / "imported"
    (tmp_path / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    scanner = sp.ScanProcess()
    try:
        assert scanner.wait_ready()
    finally:
        scanner.close()
    assert not marker.exists()
