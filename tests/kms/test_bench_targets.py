"""The bench's verdict on the issue's targets (kms/bench/targets.py): which side of each
bound is good, a ceiling measured in the same run that puts a target out of reach, and
parts that did not run."""

from __future__ import annotations

import copy
from typing import Any

from kms.bench.targets import TARGETS, judge, row, summary

ALL_MET: dict[str, Any] = {
    "xks_encrypt": {"rps": 3000.0, "p99_ms": 12.0},
    "xks_vs_echo": 0.55,
    "envelope_vs_tink_cached": 1.2,
    "envelope_vs_tink_uncached": 0.31,
    "envelope_vs_esdk": 3.1,
    "envelope_hsm_limit": {"vs_tink_uncached": 0.4, "vs_esdk": 6.0, "hsm_wrap_ops": 30000.0},
    "audit_append_rps": 25000.0,
    "audit_verify_rps": 150000.0,
    "revoke_propagation_ms": {"same_process": 0.02, "cross_process": 1.5},
    "gateway_overhead_ms": {"p50": 0.9, "p99": 9.0},
}


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in judge(result)}


def test_every_target_of_the_issue_is_judged() -> None:
    verdicts = judge(ALL_MET)
    assert [v["target"] for v in verdicts] == [t.name for t in TARGETS]
    assert len(verdicts) == 11
    assert all(v["met"] is True for v in verdicts)
    assert summary(verdicts) == "11 of 11 met"


def test_each_bound_is_judged_on_its_own_side() -> None:
    r = copy.deepcopy(ALL_MET)
    r["xks_vs_echo"] = 0.499  # at least 0.5
    r["xks_encrypt"]["p99_ms"] = 25.01  # at most 25
    r["revoke_propagation_ms"]["cross_process"] = 1000.0  # at most 1,000: the bound is met
    r["audit_append_rps"] = 20000  # at least 20,000: an int, the bound itself
    v = by_name(r)
    assert v["xks_vs_echo"]["met"] is False and v["xks_vs_echo"]["rule"] == ">= 0.5"
    assert v["xks_encrypt.p99_ms"]["met"] is False and v["xks_encrypt.p99_ms"]["rule"] == "<= 25"
    assert v["revoke_propagation_ms.cross_process"]["met"] is True
    assert v["audit_append_rps"]["met"] is True and v["audit_append_rps"]["rule"] == ">= 20,000"
    assert summary(judge(r)) == "9 of 11 met; missed: xks_encrypt.p99_ms, xks_vs_echo"
    assert row(v["xks_vs_echo"]) == ">= 0.5: 0.499  MISSED"
    assert row(v["audit_append_rps"]) == ">= 20,000: 20,000  met"
    assert row(v["xks_encrypt.p99_ms"]) == "<= 25: 25.01  MISSED"
    r["revoke_propagation_ms"]["same_process"] = 0.0004  # small, but not 0
    assert row(by_name(r)["revoke_propagation_ms.same_process"]) == "<= 0.5: 0.0004  met"
    r["xks_bare_vs_echo"] = 0.512  # the bare reference, same rounds: context, not a ceiling
    echo = by_name(r)["xks_vs_echo"]
    assert echo["reference"] == {"field": "xks_bare_vs_echo", "value": 0.512}
    assert "reachable" not in echo
    assert row(echo) == ">= 0.5: 0.499  MISSED (reference: xks_bare_vs_echo 0.512)"


def test_a_ceiling_below_the_bound_puts_the_target_out_of_reach() -> None:
    r = copy.deepcopy(ALL_MET)
    r["envelope_vs_tink_uncached"] = 0.16
    r["envelope_hsm_limit"]["vs_tink_uncached"] = 0.286  # SoftHSM's wrap alone, same run
    r["envelope_vs_esdk"] = 1.8
    r["envelope_hsm_limit"]["vs_esdk"] = 3.257  # above 3: missed, but within reach
    v = by_name(r)
    uncached, esdk = v["envelope_vs_tink_uncached"], v["envelope_vs_esdk"]
    assert (uncached["met"], uncached["ceiling"], uncached["reachable"]) == (False, 0.286, False)
    assert (esdk["met"], esdk["ceiling"], esdk["reachable"]) == (False, 3.257, True)
    assert "reachable" not in v["xks_vs_echo"]  # no ceiling is measured for it
    assert summary(judge(r)) == (
        "9 of 11 met; missed: envelope_vs_tink_uncached, envelope_vs_esdk "
        "(out of reach on this machine: envelope_vs_tink_uncached)")
    assert row(uncached) == ">= 0.3: 0.16  MISSED (ceiling 0.286: out of reach on this machine)"
    assert row(esdk) == ">= 3: 1.8  MISSED (ceiling 3.257)"


def test_a_part_that_did_not_run_is_not_measured_rather_than_missed() -> None:
    r = copy.deepcopy(ALL_MET)
    del r["xks_encrypt"], r["xks_vs_echo"], r["gateway_overhead_ms"]  # no wrk
    del r["envelope_hsm_limit"]
    r["audit_verify_rps"] = True  # not a number: not a measurement either
    v = by_name(r)
    for name in ("xks_encrypt.rps", "xks_encrypt.p99_ms", "xks_vs_echo",
                 "gateway_overhead_ms.p50", "audit_verify_rps"):
        assert v[name]["value"] is None and v[name]["met"] is None, name
    assert v["envelope_vs_esdk"]["met"] is True and v["envelope_vs_esdk"]["reachable"] is None
    assert row(v["xks_vs_echo"]) == ">= 0.5: not measured"
    assert summary(judge(r)) == (
        "6 of 11 met; not measured: xks_encrypt.rps, xks_encrypt.p99_ms, xks_vs_echo, "
        "audit_verify_rps, gateway_overhead_ms.p50")
