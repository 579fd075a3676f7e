"""The verifier's regex fast path accepts only RFC 8785 canonical schema-1 records: lines
that are canonical and that ``AuditRecord.from_json`` accepts (record 0's prev aside, which
the chain check reports)."""

from __future__ import annotations

import json
from pathlib import Path

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.audit.canonical_lines import CANONICAL_LINE
from kms.audit.record import (
    OPERATIONS,
    Actor,
    AuditRecord,
    ChainHead,
    RequestMetadata,
    build_record,
    encode,
    is_real_day,
    record_hash,
)
from kms.audit.verify import _schema_valid_but_genesis, verify_export
from tests.audit.synthetic import T0, Signer, build_export, make_records, notes_for

_text = st.text(min_size=1, max_size=12).filter(lambda s: all(not 0xD800 <= ord(c) <= 0xDFFF
                                                              for c in s))
_opt = st.none() | _text


@st.composite
def records(draw: st.DrawFn) -> AuditRecord:
    outcome = draw(st.sampled_from(["ok", "error", "denied"]))
    return AuditRecord(
        seq=draw(st.integers(1, 2**53 - 1)),
        time="2025-01-01T00:00:00.000000Z",
        prev="c" * 64,
        op=draw(st.sampled_from(sorted(OPERATIONS))),
        outcome=outcome,
        actor=Actor(kind="cli", id=draw(_text)),
        key_id=draw(_opt),
        key_version=draw(st.none() | st.integers(1, 2**53 - 1)),
        store=draw(_opt),
        error=None if outcome == "ok" else "SomeException",
        request=draw(st.none() | st.builds(RequestMetadata, kmsRequestId=_opt,
                                           awsPrincipalArn=_opt, kmsViaService=_opt)),
        context_hash=draw(st.none() | st.just("d" * 64)),
        latency_us=draw(st.none() | st.integers(0, 2**53 - 1)),
        detail=draw(st.sampled_from([{}, {}, {"reason": "x"}])),
    )


def _is_canonical(line: bytes) -> bool:
    try:
        return bool(rfc8785.dumps(json.loads(line)) == line)
    except Exception:
        return False


def _fast_accepts(line: bytes) -> bool:
    """What the verifier's per-line fast path accepts: the pattern and a real day."""
    m = CANONICAL_LINE.fullmatch(line)
    return m is not None and is_real_day(m.group(5).decode())


def _is_record(line: bytes) -> bool:
    """Canonical and schema-valid (record 0's prev aside)."""
    return _is_canonical(line) and _schema_valid_but_genesis(json.loads(line))


@settings(max_examples=150, deadline=None)
@given(rec=records())
def test_matches_are_canonical_and_common_records_match(rec: AuditRecord) -> None:
    line = encode(rec)
    m = CANONICAL_LINE.fullmatch(line)
    if m is not None:
        assert _is_record(line)
        assert int(m.group(4)) == rec.seq and m.group(1).decode() == rec.op
    # Ordinary: what the pattern is documented to cover (kms/audit/verify.py): ASCII, no
    # \u escapes, no raw DEL (canonical JSON keeps 0x7f raw; the pattern leaves such lines
    # to the JSON path, see the test below), integers below 10**15, an empty detail.
    simple = (not rec.detail and line.isascii() and rec.seq < 10**15
              and (rec.key_version or 0) < 10**15
              and (rec.latency_us or 0) < 10**15 and b"\\u" not in line
              and b"\x7f" not in line)
    if simple:
        assert m is not None  # the fast path covers ordinary records


def test_a_raw_del_is_canonical_and_left_to_the_json_path(tmp_path: Path) -> None:
    """Found by the test above on a fresh Hypothesis database: an actor id holding DEL
    (0x7f), which RFC 8785 writes raw. The pattern does not match it (by design), the line
    is canonical, and an export holding it between ordinary records verifies."""
    head_records = list(make_records(2))
    head = ChainHead(seq=1, record_hash=record_hash(head_records[-1]))
    rec = build_record(head, time=T0, op=sorted(OPERATIONS)[0], outcome="ok",
                       actor=Actor(kind="cli", id="a\x7fb"))
    line = encode(rec)
    assert b"\x7f" in line
    assert CANONICAL_LINE.fullmatch(line) is None
    assert _is_canonical(line)
    tail = list(make_records(2, start=3, head=ChainHead(seq=2, record_hash=record_hash(line))))
    records = [*head_records, line, *tail]
    signer = Signer.generate()
    out = build_export(tmp_path / "export", records, notes_for(records, signer, 5), signer)
    report = verify_export(out, signer.pem)
    assert report.status == "valid", report.faults
    assert report.record_count == 5


@settings(max_examples=200, deadline=None)
@given(rec=records(), pos=st.integers(0, 10**6), byte=st.integers(0, 255))
def test_mutated_lines_match_only_if_canonical(rec: AuditRecord, pos: int, byte: int) -> None:
    line = bytearray(encode(rec))
    line[pos % len(line)] = byte
    if _fast_accepts(bytes(line)):
        assert _is_record(bytes(line))


@settings(max_examples=100, deadline=None)
@given(rec=records(), pos=st.integers(0, 10**6),
       insert=st.sampled_from([b" ", b"\\u0041", b"\\/", b"-0", b"1.0", b"\x7f", b"\t", b",",
                               b'"', b"\\", b"\\u001F", b"00", b"e1"]))
def test_insertions_match_only_if_canonical(rec: AuditRecord, pos: int, insert: bytes) -> None:
    line = encode(rec)
    i = pos % len(line)
    mutated = line[:i] + insert + line[i:]
    if _fast_accepts(mutated):
        assert _is_record(mutated)
