"""The envelope part of ``kms bench`` (kms/bench/envelope_peers.py): the cases take turns
within each round, and a ratio compares the two cases of the same round."""

from __future__ import annotations

from kms.bench.envelope_peers import Cases, Interleaved

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
