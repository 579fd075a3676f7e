"""``kms bench --quick --json OUT`` end to end (issue 8): it runs every part against real
processes (``kms serve`` under wrk, SoftHSM, the peers, ``gateway serve``), prints the
table, writes one JSON object with every field the issue names, and stays within the
2 minutes ``--quick`` promises on 2 cores."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from kms.bench import wrk

KMS = str(Path(sys.executable).parent / "kms")


def positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


@pytest.mark.slow
@pytest.mark.skipif(not wrk.available(), reason="wrk not installed (make install)")
def test_quick_bench_writes_every_field(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([KMS, "bench", "--quick", "--json", str(out)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    print(f"\nkms bench --quick: {result['elapsed_s']} s\n{done.stdout}")

    for name in ("xks_encrypt", "xks_decrypt", "echo", "xks_encrypt_hsm_inline", "xks_bare"):
        assert all(positive(result[name][k]) for k in ("rps", "p50_ms", "p99_ms")), name
        assert result[name]["errors"] == 0, name
    for name in ("xks_vs_echo", "xks_hsm_inline_vs_echo", "xks_bare_vs_echo", "xks_vs_bare",
                 "envelope_vs_tink_cached",
                 "envelope_vs_tink_uncached", "envelope_vs_esdk", "audit_append_rps",
                 "audit_append_thread_rps", "audit_verify_rps"):
        assert positive(result[name]), name
    for peer in ("ours", "tink", "esdk"):
        assert result["envelope"][peer], peer
    for mode in ("cached_1KiB", "cached_64KiB", "uncached_1KiB", "uncached_64KiB"):
        ops = result["envelope"]["ours"][mode]
        assert positive(ops["encrypt_ops"]) and positive(ops["decrypt_ops"]), mode
    limit = result["envelope_hsm_limit"]
    assert all(positive(limit[k]) for k in ("hsm_wrap_ops", "vs_tink_uncached", "vs_esdk"))
    revoke = result["revoke_propagation_ms"]
    assert revoke["same_process"] >= 0 and revoke["cross_process"] >= 0
    gateway = result["gateway_overhead_ms"]
    assert isinstance(gateway["p50"], float) and isinstance(gateway["p99"], float)
    assert positive(gateway["requests"])
    for name in ("xks_encrypt", "xks_vs_echo", "xks_hsm_inline_vs_echo", "xks_bare_vs_echo",
                 "xks_vs_bare", "envelope_vs_esdk",
                 "envelope_hsm_limit", "audit_append_rps",
                 "revoke_propagation_ms", "gateway_overhead_ms"):
        assert name in done.stdout, f"{name} missing from the printed table"
    machine = result["machine"]
    assert machine["cpus"] == os.cpu_count() and machine["cpu"] and machine["python"]
    assert f"{machine['cpus']} CPUs, {machine['cpu']}" in done.stdout
    # the verdict on each of the targets, recomputed here from the run's own fields
    verdicts = {v["target"]: v for v in result["targets"]}
    assert len(verdicts) == 11
    for name, at_least, bound in (("xks_vs_echo", True, 0.5), ("envelope_vs_esdk", True, 3),
                                  ("audit_verify_rps", True, 100_000)):
        value = result[name]
        assert verdicts[name]["value"] == value
        assert verdicts[name]["met"] is (value >= bound if at_least else value <= bound)
    p99 = result["xks_encrypt"]["p99_ms"]
    assert verdicts["xks_encrypt.p99_ms"]["met"] is (p99 <= 25)
    uncached = verdicts["envelope_vs_tink_uncached"]
    assert uncached["ceiling"] == result["envelope_hsm_limit"]["vs_tink_uncached"]
    assert uncached["reachable"] is (uncached["ceiling"] >= 0.3)
    met = sum(1 for v in verdicts.values() if v["met"])
    assert f"{met} of 11 met" in done.stdout
    assert result["xks_rounds"] >= 3  # the XKS targets took turns (xks_load.run)
    assert result["mode"] == "quick" and result["elapsed_s"] < 120


def test_micro_xks_part_runs_a_signed_request_through_the_handler(tmp_path: Path) -> None:
    """``python -m kms.bench.micro xks`` (docs/benchmarks-history.md, third pass): its signed
    encrypt must succeed (the part asserts a 200 first) and each figure is printed."""
    done = subprocess.run([sys.executable, "-m", "kms.bench.micro", "xks"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [x for x in done.stdout.splitlines() if x.strip()]
    assert [x.split(" min ")[0].strip() for x in lines] == [
        "XksHandler.process, encrypt", "XksHandler.process, bad signature",
        "audit encode_fields (that event)", "writer process: rebuild + encode",
        "writer process: encode_values"]
    assert all(" us, median " in x for x in lines)


EDGE_SNIPPET = """
from kms.bench import micro
from kms.bench.local_runtime import local_runtime
with local_runtime() as (rt, _):
    rt.keys.create_key("micro", micro.USAGE, micro.cli_actor("test"))
    micro.edge(rt, rounds=1, per_worker=10)
    assert "encrypt" not in vars(rt.hsm.inner), "the constant stayed in place"
"""


def test_micro_edge_part_alternates_the_real_and_the_replaced_hsm_call(
        tmp_path: Path) -> None:
    """``python -m kms.bench.micro edge`` (docs/benchmarks-history.md, eighth pass): every request
    through the ASGI app answers 200 (the part raises otherwise), both variants print their
    figures, and the HSM call is the real one again afterwards."""
    done = subprocess.run([sys.executable, "-c", EDGE_SNIPPET], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [x for x in done.stdout.splitlines() if x.startswith("XKS edge in-process")]
    assert len(lines) == 2, done.stdout
    assert "real HSM call" in lines[0] and "replaced by a constant" in lines[1]
    for line in lines:
        cpu = float(line.split("event loop ")[1].split(" us/request")[0])
        rps = float(line.split(", ")[-1].split(" requests/s")[0].replace(",", ""))
        assert cpu > 0 and rps > 0, line


@pytest.mark.skipif(not wrk.available(), reason="wrk not installed (make install)")
def test_paced_bench_reports_latency_and_the_writer_process_cpu(tmp_path: Path) -> None:
    """``python -m kms.bench.paced`` (docs/benchmarks-history.md, fifth pass): every answer a 200,
    and the audit writer process (a child of kms serve) did the commits (the HSM calls on
    the event loop: KMS_HSM_WORKER=off)."""
    env = dict(os.environ, KMS_HSM_WORKER="off")
    done = subprocess.run([sys.executable, "-m", "kms.bench.paced", "20", "2"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.strip()
    assert out.startswith("audit writer process, HSM worker off, pause 20 ms: "), out
    answers = out.split("answers ")[1].split("}")[0] + "}"
    assert list(json.loads(answers.replace("'", '"'))) == ["200"], out
    children_us = float(out.split("its children ")[1].split(" us")[0])
    assert children_us > 0, out  # the writer process worked; the thread did not


def test_paced_bench_reports_the_hsm_worker_on_by_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KMS_HSM_WORKER"}
    done = subprocess.run([sys.executable, "-m", "kms.bench.paced", "20", "2"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.strip()
    assert out.startswith("audit writer process, HSM worker on ("), out
    assert " fallbacks), pause 20 ms: " in out, out


def test_xks_rounds_merge_into_one_run_and_ratios_pair_rounds() -> None:
    from kms.bench.xks_load import _merged, _ratio

    def result(rps: float, seconds: float, ms: float) -> wrk.LoadResult:
        grid = tuple((p, ms * (2 if p >= 99 else 1)) for p in wrk.QUANTILE_GRID)
        return wrk.LoadResult(rps=rps, p50_ms=ms, p99_ms=2 * ms,
                              requests=round(rps * seconds), errors=0, quantiles=grid)

    fast, slow = [result(3000, 2, 5), result(1000, 2, 15)], [result(6000, 2, 2),
                                                              result(2000, 2, 6)]
    merged = _merged(fast)
    assert merged["rps"] == 2000.0 and merged["requests"] == 8000  # 8,000 in 4 s
    # 6,000 requests at 5 ms (their top 1 % at 10), 2,000 at 15 (top 1 % at 30), together
    assert merged["p50_ms"] == 5.0 and merged["p99_ms"] == 15.0
    # each round's ratio is 0.5: the machine's speed between rounds does not move it
    assert _ratio(fast, slow) == 0.5


def test_the_cpu_model_comes_from_cpuinfo(tmp_path: Path) -> None:
    from kms.bench.runner import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n")
    assert cpu_model(str(info)) == "AMD EPYC 7B13"
    info.write_text("processor\t: 0\nmodel name\t:   \n")  # empty: what platform says
    assert cpu_model(str(info)) == (platform.processor() or "unknown")
    assert cpu_model(str(tmp_path / "missing")) == (platform.processor() or "unknown")
