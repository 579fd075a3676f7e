"""Runs every part of ``kms bench`` and assembles one JSON object (docs/benchmarks.md)."""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kms.audit.event import cli_actor
from kms.bench import targets
from kms.keys.local_keyring import LocalKeyring
from kms.keys.model import KeyUsage


@dataclass(frozen=True)
class Plan:
    http_seconds: int
    envelope_seconds: float
    audit_seconds: float
    verify_records: int
    revoke_rounds: int
    gateway_seconds: int


QUICK = Plan(http_seconds=5, envelope_seconds=0.5, audit_seconds=3, verify_records=100_000,
             revoke_rounds=3, gateway_seconds=3)
FULL = Plan(http_seconds=15, envelope_seconds=2.0, audit_seconds=10, verify_records=1_000_000,
            revoke_rounds=10, gateway_seconds=10)


def _step(name: str, log: Callable[[str], None]) -> float:
    log(f"bench: {name} ...")
    return time.perf_counter()


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from kms.bench import audit_bench, envelope_peers, revoke_bench, wrk, xks_load
    from kms.bench.local_runtime import local_runtime

    plan = QUICK if quick else FULL
    started = time.perf_counter()
    result: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(),
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    if wrk.available():
        _step("XKS encrypt/decrypt and echo under wrk", log)
        result.update(xks_load.run(plan.http_seconds))
    else:
        log("bench: wrk not found (apt-get install wrk): HTTP and gateway figures skipped")

    _step("envelope: ours, Tink, AWS Encryption SDK", log)
    with local_runtime() as (rt, env):
        rt.keys.create_key("bench-env", frozenset({KeyUsage.ENCRYPT, KeyUsage.DECRYPT}),
                           cli_actor("bench"))
        result.update(envelope_peers.measure(
            LocalKeyring(rt.keys, cli_actor("bench")), "bench-env", plan.envelope_seconds,
            hsm_floor=envelope_peers.hsm_wrap(rt.keys, "bench-env")))

        # kms serve's path (the one every XKS request takes): 32 coroutines on the loop,
        # committed by the writer process; then the library's (CLI, admin threads): 32
        # threads, committed by the log's writer thread.
        _step("audit appends (32 writers, kms serve's path)", log)
        result["audit_append_rps"] = audit_bench.append_rate_serving(
            rt.engine, rt.clock, plan.audit_seconds)["rps"]
        _step("audit appends (32 writer threads, the library's path)", log)
        result["audit_append_thread_rps"] = audit_bench.append_rate(
            rt.audit, plan.audit_seconds)["rps"]

        _step("revocation propagation", log)
        cross, cross_from_call = revoke_bench.cross_process(rt, env, plan.revoke_rounds)
        result["revoke_propagation_ms"] = {
            "same_process": revoke_bench.same_process(rt, plan.revoke_rounds),
            "cross_process": cross,
            "cross_process_from_call": cross_from_call,
        }

    _step(f"audit verify over {plan.verify_records:,} records", log)
    result["audit_verify_rps"] = audit_bench.verify_rate(plan.verify_records)["rps"]

    try:
        gateway_overhead = importlib.import_module("kms.bench.gateway_overhead")
    except ImportError:  # the gateway is a separate service; skip when it is absent
        log("bench: gateway not installed: gateway overhead skipped")
    else:
        if wrk.available():  # its clients are wrk's connections
            _step("gateway overhead (16 clients)", log)
            result["gateway_overhead_ms"] = gateway_overhead.run(plan.gateway_seconds)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["targets"] = targets.judge(result)
    return result


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's model name (Linux), else what ``platform`` says, else "unknown".
    Runs on different processors do not compare even as ratios: a faster core speeds the
    Python peers up more than SoftHSM's system calls (docs/benchmarks-history.md)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(r: dict[str, Any]) -> str:
    rows = [("metric", "value")]
    machine = r.get("machine")
    if isinstance(machine, dict):
        rows.append(("machine", f"{machine.get('cpus')} CPUs, {machine.get('cpu', 'unknown')}, "
                                f"Python {machine.get('python')}"))

    def http(name: str) -> None:
        if name in r:
            v = r[name]
            rows.append((name, f"{v['rps']:,.0f} req/s  p50 {v['p50_ms']:.2f} ms  "
                               f"p99 {v['p99_ms']:.2f} ms  errors {v['errors']}"))

    for name in ("xks_encrypt", "xks_decrypt", "echo", "xks_encrypt_hsm_inline", "xks_bare"):
        http(name)
    for name in ("xks_vs_echo", "xks_hsm_inline_vs_echo", "xks_bare_vs_echo", "xks_vs_bare"):
        if name in r:
            rows.append((name, f"{r[name]:.3f}"))
    env = r.get("envelope", {})
    for who, data in env.items():
        if not isinstance(data, dict):  # "rounds"
            continue
        for case, v in data.items():
            rows.append((f"envelope {who} {case}",
                         f"encrypt {v['encrypt_ops']:,.0f}/s  decrypt {v['decrypt_ops']:,.0f}/s"))
    if "envelope_hsm_limit" in r:
        v = r["envelope_hsm_limit"]
        rows.append(("envelope_hsm_limit", f"SoftHSM wrap alone {v['hsm_wrap_ops']:,.0f}/s: "
                     f"at most {v['vs_tink_uncached']} of Tink, {v['vs_esdk']} x the SDK"))
    for name in ("envelope_vs_tink_cached", "envelope_vs_tink_uncached", "envelope_vs_esdk",
                 "audit_append_rps", "audit_append_thread_rps", "audit_verify_rps"):
        if name in r:
            rows.append((name, f"{r[name]:,}"))
    if "revoke_propagation_ms" in r:
        v = r["revoke_propagation_ms"]
        rows.append(("revoke_propagation_ms",
                     f"same process {v['same_process']} ms, cross process {v['cross_process']} ms"))
    if "gateway_overhead_ms" in r:
        v = r["gateway_overhead_ms"]
        rows.append(("gateway_overhead_ms", f"p50 {v['p50']} ms, p99 {v['p99']} ms"))
    verdicts = r.get("targets")
    if isinstance(verdicts, list) and verdicts:
        rows += [(f"target {v['target']}", targets.row(v)) for v in verdicts]
        rows.append(("targets", targets.summary(verdicts)))
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
