"""The fast canonical encoder of audit records is byte-identical to the rfc8785 package."""

from __future__ import annotations

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.audit.record import Actor, AuditRecord, RequestMetadata, encode

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
