"""The envelope part of ``kms bench`` (kms/bench/envelope_peers.py): the cases take turns
within each round, and a ratio compares the two cases of the same round."""

from __future__ import annotations

from typing import Any

import pytest

from hsm.types import GcmCiphertext
from kms.audit.event import cli_actor
from kms.bench.envelope_peers import CONTEXT, Cases, Interleaved, hsm_wrap, measure
from kms.envelope.context import context_digest
from kms.envelope.format import wrap_aad_prefix
from kms.errors import InvalidCiphertextError
from kms.keys.local_keyring import LocalKeyring
from kms.keys.model import KeyUsage

A = ("ours", "uncached_1KiB", "encrypt_ops")
B = ("esdk", "1KiB", "encrypt_ops")


def test_the_cases_take_turns_within_each_round() -> None:
    calls: list[str] = []
    cases: Cases = {A: lambda: calls.append("a"), B: lambda: calls.append("b")}
    runs = Interleaved.run(cases, seconds=0.02, rounds=3)
    assert [len(v) for v in runs.rounds.values()] == [3, 3]
    # each window is one unbroken run of one case; the windows alternate a, b, a, b, a, b
    windows = [c for i, c in enumerate(calls) if i == 0 or calls[i - 1] != c]
    assert windows == ["a", "b"] * 3


def test_a_ratio_is_the_median_of_the_same_rounds_ratios() -> None:
    # a round-by-round ratio of 1, 4, 1; the ratio of the medians would be 20 / 10 = 2
    runs = Interleaved({A: [10.0, 20.0, 30.0], B: [10.0, 5.0, 30.0]})
    assert runs.ratio(A, B) == 1.0
    assert runs.table() == {"ours": {"uncached_1KiB": {"encrypt_ops": 20.0}},
                            "esdk": {"1KiB": {"encrypt_ops": 10.0}}}


def test_the_hsm_limit_is_the_wrap_an_uncached_blob_makes(make_runtime: Any,
                                                          sqlite_url: str) -> None:
    """hsm_wrap makes the very SoftHSM call of an uncached blob (same key version, same
    AAD: the key service unwraps it as the keyring's), and measure reports its limit."""
    rt = make_runtime(sqlite_url)
    rt.keys.create_key("k", frozenset({KeyUsage.ENCRYPT, KeyUsage.DECRYPT}), cli_actor("t"))
    op = hsm_wrap(rt.keys, "k")
    ct = op()
    assert isinstance(ct, GcmCiphertext)
    aad = wrap_aad_prefix("local", "k") + context_digest(CONTEXT)
    assert len(rt.keys.decrypt("k", 1, ct, aad)) == 32
    with pytest.raises(InvalidCiphertextError):
        rt.keys.decrypt("k", 1, ct, aad[:-1] + b"\x00")
    out = measure(LocalKeyring(rt.keys, cli_actor("t")), "k", 0.07, hsm_floor=op)
    limit = out["envelope_hsm_limit"]
    assert limit["hsm_wrap_ops"] > 0 and limit["vs_tink_uncached"] > 0 < limit["vs_esdk"]
    assert "hsm" not in out["envelope"]  # a limit, not a case of the table
