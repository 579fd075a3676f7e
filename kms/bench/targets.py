"""The targets ``kms bench`` is held to (issue 8), judged against one run's result.

Each target names a field of the result, a bound and which side of it is good. Two of
them also have a measured ceiling in the same run: ``envelope_hsm_limit`` times SoftHSM's
wrap alone, with nothing of ours around it, in the same rounds as the envelope cases. No
envelope that makes that call for every blob can do better. A target whose ceiling falls
short of its bound cannot be met on that machine and token, and the verdict says so
(``reachable``). The target is not lowered. ``xks_vs_echo`` is read against the bare
reference of the same rounds instead, the least an XKS endpoint can do on the same stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    name: str  # the result's field, dotted into nested objects
    at_least: bool  # True: the value must be >= bound; False: <= bound
    bound: float
    ceiling: str | None = None  # a field of the same run that the value cannot exceed
    reference: str | None = None  # a field of the same run to read the value against

    @property
    def rule(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.bound:,g}"


TARGETS = (
    Target("xks_encrypt.rps", True, 1800),
    Target("xks_encrypt.p99_ms", False, 25),
    Target("xks_vs_echo", True, 0.5, reference="xks_bare_vs_echo"),
    Target("envelope_vs_tink_cached", True, 1.0),
    Target("envelope_vs_tink_uncached", True, 0.3, "envelope_hsm_limit.vs_tink_uncached"),
    Target("envelope_vs_esdk", True, 3, "envelope_hsm_limit.vs_esdk"),
    Target("audit_append_rps", True, 20_000),
    Target("audit_verify_rps", True, 100_000),
    Target("revoke_propagation_ms.same_process", False, 0.5),
    Target("revoke_propagation_ms.cross_process", False, 1000),
    Target("gateway_overhead_ms.p50", False, 2),
)


def _field(result: dict[str, Any], dotted: str) -> float | None:
    value: Any = result
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def judge(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per target: ``target``, ``rule``, ``value`` (None: the part did not run,
    e.g. without wrk), ``met`` (None when not measured) and, for a target with a ceiling,
    ``ceiling`` and ``reachable`` (whether the ceiling itself meets the bound), and for
    ``xks_vs_echo`` its ``reference``: the bare endpoint's ratio in the same rounds, which
    does only the mandatory work (kms/bench/bare_xks.py). It is not a ceiling: ours could
    beat it."""
    verdicts: list[dict[str, Any]] = []
    for t in TARGETS:
        value = _field(result, t.name)
        met = None if value is None else (value >= t.bound if t.at_least else value <= t.bound)
        verdict: dict[str, Any] = {"target": t.name, "rule": t.rule, "value": value, "met": met}
        if t.ceiling is not None:
            ceiling = _field(result, t.ceiling)
            verdict["ceiling"] = ceiling
            verdict["reachable"] = None if ceiling is None else ceiling >= t.bound
        if t.reference is not None:
            verdict["reference"] = {"field": t.reference, "value": _field(result, t.reference)}
        verdicts.append(verdict)
    return verdicts


def summary(verdicts: list[dict[str, Any]]) -> str:
    """``8 of 11 met; missed: a, b (out of reach on this machine: b); not measured: c``."""
    measured = [v for v in verdicts if v["met"] is not None]
    missed = [v for v in measured if not v["met"]]
    line = f"{len(measured) - len(missed)} of {len(verdicts)} met"
    if missed:
        line += "; missed: " + ", ".join(v["target"] for v in missed)
        beyond = [v["target"] for v in missed if v.get("reachable") is False]
        if beyond:
            line += f" (out of reach on this machine: {', '.join(beyond)})"
    unmeasured = [v["target"] for v in verdicts if v["met"] is None]
    if unmeasured:
        line += "; not measured: " + ", ".join(unmeasured)
    return line


def _number(x: float) -> str:
    """At most three decimals, without trailing zeros; three significant digits below 1
    (a revocation of 0.0004 ms is not 0)."""
    if abs(x) < 1:
        return f"{x:.3g}"
    return f"{x:,.3f}".rstrip("0").rstrip(".")


def row(verdict: dict[str, Any]) -> str:
    """The table's cell for one verdict."""
    value = verdict["value"]
    if value is None:
        return f"{verdict['rule']}: not measured"
    text = f"{verdict['rule']}: {_number(value)}"
    text += "  met" if verdict["met"] else "  MISSED"
    if verdict.get("ceiling") is not None:
        text += f" (ceiling {verdict['ceiling']:g}"
        text += ")" if verdict["reachable"] else ": out of reach on this machine)"
    reference = verdict.get("reference")
    if reference is not None and reference["value"] is not None:
        text += f" (reference: {reference['field']} {reference['value']:g})"
    return text
