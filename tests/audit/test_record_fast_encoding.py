"""The fast canonical encoders of audit records are byte-identical to the rfc8785 package
(``encode``) and to ``encode(AuditRecord(...))`` (``encode_fields``, errors included)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.audit import record as record_module
from kms.audit.record import (
    GENESIS_PREV,
    OPERATIONS,
    Actor,
    ActorKind,
    AuditRecord,
    Operation,
    Outcome,
    RequestMetadata,
    encode,
    encode_fields,
)

text = st.text(min_size=1, max_size=40).filter(
    lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
maybe = st.none() | text


@settings(max_examples=400, deadline=None)
@given(seq=st.integers(0, 2**53 - 1), key_id=maybe, store=maybe, actor_id=text,
       req_id=maybe, arn=maybe, reason=maybe, n=st.integers(-(2**53) + 1, 2**53 - 1),
       latency=st.none() | st.integers(0, 2**53 - 1))
def test_fast_path_equals_rfc8785(seq: int, key_id: str | None, store: str | None,
                                  actor_id: str, req_id: str | None, arn: str | None,
                                  reason: str | None, n: int, latency: int | None) -> None:
    record = AuditRecord(
        seq=seq, time="2026-11-26T12:00:00.000001Z", prev=("0" if seq == 0 else "a") * 64,
        op="xks.encrypt", outcome="ok", actor=Actor(kind="xks_credential", id=actor_id),
        key_id=key_id, store=store,
        request=RequestMetadata(kmsRequestId=req_id, awsPrincipalArn=arn),
        latency_us=latency, detail={"reason": reason, "count": n, "flag": True})
    assert encode(record) == rfc8785.dumps(record.to_json())


def test_control_characters_and_non_ascii() -> None:
    for value in ["\x00\x01\x1f", "tab\tnew\nline\r", 'quote" back\\', "é€😀", "\u2028\u2029",
                  "\x7f"]:
        record = AuditRecord(seq=1, time="2026-11-26T12:00:00.000001Z", prev="b" * 64,
                             op="key.revoke", outcome="ok", actor=Actor(kind="cli", id=value),
                             detail={"reason": value})
        assert encode(record) == rfc8785.dumps(record.to_json())


# --- encode_fields: the audit log's lean path -----------------------------------------------
# It must give the bytes of encode(AuditRecord(...)) for the same fields, and the same
# error when AuditRecord rejects them.

class _Str(str):
    """A str subclass: the lean path leaves those to AuditRecord."""


_T = "2026-11-26T12:00:00.000001Z"
_good_text = st.text(min_size=1, max_size=30)  # lone surrogates included: both must reject
_fields = {
    "seq": st.integers(0, 2**53 - 1) | st.sampled_from([-1, 2**53, True, 1.0, "1"]),
    "time": st.sampled_from([_T, "2026-02-29T12:00:00.000001Z", "2026-11-26T24:00:00.000001Z",
                             "2026-11-26T12:00:60.000001Z", "2026-11-26 12:00:00.000001Z",
                             "0000-01-01T00:00:00.000000Z", _Str(_T), 5]),
    "prev": st.sampled_from(["a" * 64, "0" * 64, "A" * 64, "a" * 63, None, _Str("a" * 64)]),
    "op": st.sampled_from([*OPERATIONS, Operation.KEY_REVOKE, "nope", None, 3, _Str("key.revoke")]),
    "outcome": st.sampled_from(["ok", "error", "denied", Outcome.DENIED, "OK", None]),
    "actor": st.sampled_from([Actor(kind="cli", id="root"),
                              Actor(kind=ActorKind.XKS_CREDENTIAL, id="AKID\u00e9\n\"x"),
                              Actor(kind="system", id=_Str("kms")), None, "cli"]),
    "key_id": st.none() | _good_text | st.sampled_from(["", "k" * 2048, "k" * 2049, 7]),
    "key_version": st.none() | st.integers(-2, 2**53 + 1) | st.sampled_from([True, 1.5]),
    "store": st.none() | _good_text | st.sampled_from(["", b"default"]),
    "error": st.sampled_from([None, "ValidationException", "Bad Name", "", 5]),
    "request": st.none() | st.builds(RequestMetadata, kmsRequestId=st.none() | _good_text,
                                     kmsOperation=st.none() | _good_text,
                                     awsSourceVpce=st.none() | st.just("vpce-1"))
    | st.sampled_from([{"kmsRequestId": "r"}]),
    "context_hash": st.sampled_from([None, "d" * 64, "D" * 64, "d" * 65, 3]),
    "latency_us": st.none() | st.integers(-1, 2**53) | st.sampled_from([False]),
    "detail": st.sampled_from([None, {}, {"reason": "x", "n": -5, "ok": True, "z": None},
                               {"Bad": 1}, {"f": 1.5}, [], "x", {"k" * 65: 1},
                               MappingProxyType({"a": 1}), MappingProxyType({})]),
}


def _slow(f: dict[str, Any]) -> bytes:
    args = dict(f)
    if args["detail"] is None:
        args["detail"] = {}
    return encode(AuditRecord(**args))


def _outcome(fn: Any, f: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", fn(f)
    except Exception as exc:  # the kind and message are what is compared
        return type(exc).__name__, str(exc)


_BASE: dict[str, Any] = dict(
    seq=5, time=_T, prev="a" * 64, op="xks.encrypt", outcome="denied",
    actor=Actor(kind="xks_credential", id="AKID"), key_id="k", key_version=2, store="default",
    error="AccessDeniedException", request=RequestMetadata(kmsRequestId="r"),
    context_hash="d" * 64, latency_us=10, detail={"rule": "x"})


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(sorted(_fields)), min_size=1, max_size=3, unique=True)
       .flatmap(lambda names: st.fixed_dictionaries({n: _fields[n] for n in names})))
def test_encode_fields_equals_audit_record_encoding(change: dict[str, Any]) -> None:
    """A valid record with one to three fields replaced by valid or invalid values."""
    f = {**_BASE, **change}
    if f["seq"] == 0 and f["prev"] == "a" * 64:
        f["prev"] = GENESIS_PREV
    assert _outcome(lambda a: encode_fields(**a), f) == _outcome(_slow, f)


@settings(max_examples=300, deadline=None)
@given(seq=st.integers(0, 2**53 - 1), key_id=maybe, store=maybe, actor_id=text,
       req_id=maybe, arn=maybe, via=maybe, latency=st.none() | st.integers(0, 2**53 - 1),
       version=st.none() | st.integers(1, 2**53 - 1),
       ctx=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
       op=st.sampled_from(sorted(OPERATIONS)), kind=st.sampled_from(list(ActorKind)),
       outcome=st.sampled_from(list(Outcome)))
def test_encode_fields_valid_records(seq: int, key_id: str | None, store: str | None,
                                     actor_id: str, req_id: str | None, arn: str | None,
                                     via: str | None, latency: int | None, version: int | None,
                                     ctx: str | None, op: str, kind: ActorKind,
                                     outcome: Outcome) -> None:
    """Valid fields (the common case) take the lean path itself, and it is exact."""
    f: dict[str, Any] = dict(
        seq=seq, time=_T, prev=GENESIS_PREV if seq == 0 else "e" * 64, op=op,
        outcome=outcome, actor=Actor(kind=kind, id=actor_id), key_id=key_id,
        key_version=version, store=store,
        error=None if outcome == Outcome.OK else "AccessDeniedException",
        request=RequestMetadata(kmsRequestId=req_id, awsPrincipalArn=arn, kmsViaService=via),
        context_hash=ctx, latency_us=latency, detail={})
    lean = record_module._fast_parts(**f)
    assert lean is not None
    assert lean.encode("utf-8") == encode_fields(**f) == _slow(f) == rfc8785.dumps(
        AuditRecord(**f).to_json())
