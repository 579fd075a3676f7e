"""Audit record schema 1: committed vectors, canonical round trips, strict decoding."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.audit import merkle
from kms.audit.errors import NonCanonicalRecordError, RecordFormatError
from kms.audit.record import (
    GENESIS_PREV,
    OPERATIONS,
    Actor,
    AuditRecord,
    ChainHead,
    Operation,
    RequestMetadata,
    build_record,
    decode,
    encode,
    format_time,
    record_hash,
    record_leaf_hash,
)

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "audit" / "records_and_note.json").read_text()
)
ACTOR = Actor(kind="cli", id="root")


def test_record_vectors_decode_and_reencode_byte_for_byte() -> None:
    head = None
    for vec in VECTORS["records"]:
        data = vec["canonical"].encode()
        rec = decode(data)
        assert encode(rec) == data
        assert record_hash(data) == vec["record_hash"]
        assert record_leaf_hash(data).hex() == vec["leaf_hash"]
        assert rec.prev == (GENESIS_PREV if head is None else head.record_hash)
        head = ChainHead.after(data)


def test_every_field_is_present_and_null_when_absent() -> None:
    rec = build_record(None, time="2025-01-01T00:00:00.000000Z", op="xks.health",
                       outcome="ok", actor=ACTOR)
    obj = json.loads(encode(rec))
    assert sorted(obj) == sorted(
        ["v", "seq", "time", "prev", "op", "key_id", "key_version", "store", "outcome", "error",
         "actor", "request", "context_hash", "latency_us", "detail"]
    )
    assert obj["key_id"] is None and obj["request"] is None and obj["detail"] == {}
    assert obj["seq"] == 0 and obj["prev"] == GENESIS_PREV


def test_request_metadata_keeps_only_the_audited_subset() -> None:
    meta = RequestMetadata.from_xks({"kmsRequestId": "r", "kmsOperation": "Encrypt",
                                     "awsPrincipalArn": "arn:x", "extra": "dropped"})
    assert meta.to_json() == {"awsPrincipalArn": "arn:x", "awsSourceVpce": None,
                              "kmsKeyArn": None, "kmsOperation": "Encrypt",
                              "kmsRequestId": "r", "kmsViaService": None}
    # Empty and non-string values are dropped; long ones are cut to the record's limit.
    meta = RequestMetadata.from_xks({"kmsRequestId": "x" * 5000, "kmsOperation": "",
                                     "awsPrincipalArn": 7, "kmsKeyArn": None})
    assert meta.kmsRequestId == "x" * 2048
    assert meta.kmsOperation is None and meta.awsPrincipalArn is None


def test_build_record_chains() -> None:
    r0 = build_record(None, time=datetime(2025, 1, 1, tzinfo=UTC), op=Operation.KEY_CREATE,
                      outcome="ok", actor=ACTOR, key_id="k")
    b0 = encode(r0)
    head = ChainHead.after(b0)
    r1 = build_record(head, time="2025-01-01T00:00:01.000000Z", op="key.rotate",
                      outcome="ok", actor=ACTOR, key_id="k", key_version=2)
    assert (r1.seq, r1.prev) == (1, record_hash(b0))
    assert r0.op == "key.create" and type(r0.op) is str


def test_time_is_utc_with_microseconds() -> None:
    t = datetime(2025, 3, 1, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(t) == "2025-02-28T23:02:03.000004Z"
    with pytest.raises(ValueError):
        format_time(datetime(2025, 1, 1))


@pytest.mark.parametrize(
    "change",
    [
        {"op": "xks.unknown"},
        {"outcome": "maybe"},
        {"time": "2025-01-01T00:00:00Z"},
        {"time": "2025-02-30T00:00:00.000000Z"},
        {"prev": "A" * 64},
        {"seq": -1},
        {"seq": True},
        {"key_version": 0},
        {"latency_us": 1.5},
        {"context_hash": "secret"},
        {"error": "has space"},
        {"outcome": "ok", "error": "ValidationException"},
        {"detail": {"BadKey": 1}},
        {"detail": {"x": 1.0}},
        {"detail": {"x": {"nested": 1}}},
        {"seq": 2**53},
    ],
)
def test_invalid_fields_are_rejected(change: dict[str, object]) -> None:
    base = dict(seq=1, time="2025-01-01T00:00:00.000000Z", prev="a" * 64, op="xks.encrypt",
                outcome="error", actor=ACTOR)
    base.update(change)
    with pytest.raises(RecordFormatError):
        AuditRecord(**base)  # type: ignore[arg-type]


def test_seq_zero_needs_genesis_prev() -> None:
    with pytest.raises(RecordFormatError):
        AuditRecord(seq=0, time="2025-01-01T00:00:00.000000Z", prev="a" * 64, op="xks.encrypt",
                    outcome="ok", actor=ACTOR)


def _sample() -> bytes:
    return VECTORS["records"][1]["canonical"].encode()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.replace(b'"v":1', b'"v":1.0'),
        lambda b: b.replace(b'"v":1', b'"v" : 1'),
        lambda b: b + b" ",
        lambda b: b.replace(b'{"actor"', b'{"zzz":null,"actor"'),
        lambda b: b.replace(b'"seq":1', b'"seq":1,"seq":1'),
        lambda b: b.replace(b'"ops-bot"', b'"ops\\u002dbot"'),
        lambda b: json.dumps(json.loads(b), sort_keys=False, indent=None).encode(),
        lambda b: b.replace(b'"key_version":null,', b""),
        lambda b: b[:-1],
        lambda b: b"[" + b + b"]",
        lambda b: b"\xff" + b,
    ],
)
def test_decode_rejects_non_canonical_or_malformed(mutate) -> None:  # type: ignore[no-untyped-def]
    data = mutate(_sample())
    assert data != _sample()
    with pytest.raises(RecordFormatError):
        decode(data)


def test_decode_rejects_unsorted_keys_as_non_canonical() -> None:
    obj = json.loads(_sample())
    unsorted = json.dumps(dict(reversed(list(obj.items()))), separators=(",", ":")).encode()
    with pytest.raises(NonCanonicalRecordError):
        decode(unsorted)


def test_decode_rejects_oversized_input_before_parsing() -> None:
    with pytest.raises(RecordFormatError):
        decode(b"{" + b" " * 20000 + b"}")


def test_every_bit_flip_is_rejected_or_changes_the_hash() -> None:
    data = _sample()
    for i in range(len(data)):
        for bit in (0, 5):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            try:
                rec = decode(bytes(flipped))
            except RecordFormatError:
                continue
            assert record_hash(bytes(flipped)) != record_hash(data)
            assert encode(rec) == bytes(flipped)


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    seq=st.integers(1, 2**53 - 1),
    op=st.sampled_from(sorted(OPERATIONS)),
    outcome=st.sampled_from(["ok", "error", "denied"]),
    key_id=st.none() | _text,
    key_version=st.none() | st.integers(1, 2**53 - 1),
    actor_id=_text,
    request_id=st.none() | _text,
    detail=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
                           st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
                           | _text, max_size=4),
    micros=st.integers(0, 10**15),
)
def test_round_trip_property(seq: int, op: str, outcome: str, key_id: str | None,
                             key_version: int | None, actor_id: str, request_id: str | None,
                             detail: dict[str, object], micros: int) -> None:
    rec = AuditRecord(
        seq=seq,
        time=format_time(datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)),
        prev="f" * 64, op=op, outcome=outcome, actor=Actor(kind="system", id=actor_id),
        key_id=key_id, key_version=key_version,
        error=None if outcome == "ok" else "InternalException",
        request=None if request_id is None else RequestMetadata(kmsRequestId=request_id),
        detail=detail,  # type: ignore[arg-type]
    )
    data = encode(rec)
    assert b"\n" not in data
    again = decode(data)
    assert again == rec
    assert encode(again) == data
    assert record_leaf_hash(data) == merkle.leaf_hash(data)


def test_time_check_agrees_with_strptime() -> None:
    """record._is_real_date (day cached, time of day by pattern) accepts exactly what
    datetime.strptime accepts, for strings of the right shape."""
    from kms.audit.record import _TIME_RE, _is_real_date

    def strptime_ok(value: str) -> bool:
        try:
            datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            return False
        return True

    samples = [f"2025-01-01T{h:02d}:{m:02d}:{s:02d}.123456Z"
               for h in range(100) for m in range(0, 100, 3) for s in (0, 59, 60, 61, 99)]
    samples += [f"2025-01-01T12:{m:02d}:{s:02d}.000000Z" for m in range(100) for s in range(100)]
    samples += [f"{y}-{mo:02d}-{d:02d}T00:00:00.000000Z"
                for y in ("0000", "0001", "2024", "2025", "2100", "9999")
                for mo in range(14) for d in range(33)]
    for value in samples:
        assert _TIME_RE.match(value)
        assert _is_real_date(value) == strptime_ok(value), value
