"""Issue 9 item 6: sustained XKS load with revocation cycles.

Two drivers:

* ``run_sustained`` (30 s in CI, a revoke/enable cycle every 8 s): a Python client (4
  threads, botocore signing per request) paced at RATE; every answer is checked by request
  id: no error but InvalidStateException, and that only while the key is revoked; every
  acknowledged request id is in the verified audit export.
* ``run_wrk_sustained``: wrk replaying pre-signed requests (encrypts and decrypts
  alternating, re-signed every 2 minutes to stay in the SigV4 window), 32 connections
  paced to ~1,000 requests/s, answers counted by status and errorName, one revoke/enable
  cycle per ``cycle_s`` from another process (``kms keys revoke`` / ``enable``), server RSS
  from the 10th second to the end, the audit export verified and holding at least as many
  successful XKS records as wrk saw 200s. Latency percentiles are of the whole run (the
  segments' latency distributions merged; the worst segment's p99 is printed too). 60 s in CI
  (the rate and the 25 ms p99 printed, not asserted); the 10-minute soak (``KMS_SOAK=1
  .venv/bin/pytest -s -k soak tests/reliability``) asserts them too.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from kms.bench import wrk
from tests.reliability.conftest import Served
from tests.reliability.harness import (
    ENV_SOAK,
    Load,
    export_and_verify,
    kinds,
    percentile,
    presigned,
    rss_kb,
    seeds,
    wait_until,
    within,
    xks_answers,
)
from tests.server import KmsServer

RATE = 100.0  # requests/s the 2-core CI machine sustains beside the other tests' noise
P99_LIMIT_MS = 250.0


def operator(served: Served, cycle_s: float, stop: threading.Event,
             windows: list[tuple[float, float]]) -> None:
    """Revoke the key, wait a second, enable it, every ``cycle_s`` until ``stop``, from
    another process as an operator would; each revoked window goes into ``windows``."""
    n = 0
    while not stop.wait(cycle_s - 2.0 if n == 0 else cycle_s - 1.0):
        n += 1
        t0 = time.monotonic()
        served.srv.cli("keys", "revoke", "--reason", f"soak cycle {n}", served.key)
        time.sleep(1.0)
        served.srv.cli("keys", "enable", served.key)
        windows.append((t0, time.monotonic()))


def run_sustained(served: Served, tmp_path: Path, *, seconds: float, rate: float,
                  cycle_s: float) -> None:
    srv = served.srv
    assert srv.proc is not None
    pid = srv.proc.pid
    load = Load(srv.xks_endpoint, served.akid, served.secret, served.key, threads=4,
                rate=rate, decrypt_share=0.5,
                seeds=seeds(srv, served.akid, served.secret, served.key), timeout=5.0)
    windows: list[tuple[float, float]] = []
    rss: dict[str, int] = {}
    stop = threading.Event()

    start = time.monotonic()
    load.start()
    ops = threading.Thread(target=operator, args=(served, cycle_s, stop, windows),
                           daemon=True)
    ops.start()
    wait_until(lambda: time.monotonic() - start >= 10, 20, step=0.5)
    rss["t10"] = rss_kb(pid)
    time.sleep(max(0.0, seconds - (time.monotonic() - start)))
    rss["end"] = rss_kb(pid)
    stop.set()
    answers = load.stop()
    ops.join(timeout=30)
    elapsed = time.monotonic() - start

    def revoked_window(t: float) -> bool:
        # a request sent just before the enable may be answered after it: 0.5 s of slack
        return any(a - 0.2 <= t <= b + 0.5 for a, b in windows)

    unexpected = [a for a in answers if not a.ok and not (
        a.error == "InvalidStateException" and revoked_window(a.started))]
    ok = [a for a in answers if a.ok]
    lat = [a.latency * 1000 for a in ok]
    growth = (rss["end"] - rss["t10"]) / rss["t10"]
    audit = export_and_verify(srv, tmp_path / "export")
    lost = {a.rid for a in ok} - audit.ok_request_ids
    print(f"\nsustained: {elapsed:.0f} s at target {rate:.0f}/s: requests={len(answers)} "
          f"({len(answers) / elapsed:.0f}/s) {dict(kinds(answers))}; revoke/enable cycles="
          f"{len(windows)}; unexpected errors={len(unexpected)}; latency ms p50="
          f"{percentile(lat, 0.5):.1f} p99={percentile(lat, 0.99):.1f} max={max(lat):.1f}; "
          f"RSS {rss['t10']} -> {rss['end']} KiB ({growth:+.1%}); records verified="
          f"{audit.report['record_count']}, lost={len(lost)}")
    assert len(windows) >= int(seconds // cycle_s) - 1
    assert unexpected == [], kinds(unexpected)
    assert any(a.error == "InvalidStateException" for a in answers)  # revocation did bite
    assert len(answers) >= 0.9 * rate * (elapsed - 1)
    assert_tail_is_the_disks(srv, percentile(lat, 0.99))
    assert growth < 0.10
    assert lost == set()


@pytest.mark.slow
def test_sustained_load_30s(served_logged: Served, tmp_path: Path) -> None:
    """Every answer checked by request id against the verified audit export. The issue's
    60-second CI run is the wrk test below, at ten times this rate."""
    run_sustained(served_logged, tmp_path, seconds=30, rate=RATE, cycle_s=8)


@pytest.mark.slow
@pytest.mark.skipif(not wrk.available(), reason="wrk not installed (make install)")
def test_sustained_wrk_60s(served_logged: Served, tmp_path: Path) -> None:
    """Issue 9's load shape for one minute: wrk at a paced ~1,000 requests/s. Functional
    properties are asserted; the rate and the 25 ms p99 are measured and printed (targets
    are the soak's and the benchmark's business, not a unit test's). The server logs every
    answer, so that a tail over P99_LIMIT_MS can be told apart: the disk's (the audit
    commit) or the service's."""
    run_wrk_sustained(served_logged, tmp_path, seconds=60, rate=WRK_RATE, cycle_s=20,
                      strict=False)


@pytest.mark.skipif(not ENV_SOAK, reason="10-minute soak: set KMS_SOAK=1")
@pytest.mark.timeout(1200)
def test_sustained_load_soak_10min(served: Served, tmp_path: Path) -> None:
    """The issue's soak, asserted in full: 10 minutes at ~1,000 requests/s (wrk, paced),
    one revoke/enable cycle a minute, p99 under 25 ms, RSS growth under 10 %."""
    run_wrk_sustained(served, tmp_path, seconds=600,
                      rate=float(os.environ.get("KMS_SOAK_RATE", str(WRK_RATE))),
                      cycle_s=60, strict=True)


WRK_RATE = 1000.0
WRK_CONNECTIONS = 32
SEGMENT_S = 120  # pre-signed requests are replayed for at most this long (SigV4: 5 min)
P99_TARGET_MS = 25.0


def assert_tail_is_the_disks(srv: KmsServer, p99_ms: float) -> None:
    """The p99 of the server's answers with their wait for the audit commit taken out is
    under P99_LIMIT_MS: the HSM call, threads and the event loop never hold the tail. The
    rest of an answer's time is that wait, which every answer makes (the disk: its syncs
    stall for up to 1.5 s at times on this VM, disk_probe.py). The client's p99
    (``p99_ms``) is printed beside it, not judged: wrk corrects its latencies for
    coordinated omission (``stats_correct``: a request that took L adds samples at L - c,
    L - 2c, ... for its connection's cycle c, as if the requests a steady sender would
    have sent during the wait had waited too), so one 1.5 s stall of the disk in a minute
    at 1,000/s lifts its p99 far over 250 ms. A fresh clone had wrk's p99 at 858 ms while
    the server's answers had a p99 of 49 ms; scripted 1.5 s stalls of the audit writer
    reproduce it (docs/benchmarks-history.md, eleventh pass). The 10-minute soak judges wrk's
    corrected p99 against the 25 ms target: that is what AWS KMS, which does not stop
    sending while we stall, would see."""
    answers = xks_answers(srv)
    assert answers, "KMS_ACCESS_LOG=all logged no XKS answer"
    total = percentile([a.seconds for a in answers], 0.99) * 1000
    service = percentile([a.service for a in answers], 0.99) * 1000
    audit = percentile([a.audit_wait for a in answers], 0.99) * 1000
    print(f"server side, {len(answers)} answers: p99 {total:.1f} ms, of which the audit "
          f"commit's wait p99 {audit:.1f} ms; without it p99 {service:.1f} ms (the "
          f"client's p99 {p99_ms:.1f} ms); slowest "
          + ", ".join(map(str, sorted(answers, reverse=True)[:3])))
    assert service < P99_LIMIT_MS, f"the service's own p99 {service:.1f} ms"


def calibrate_pause(served: Served, rate: float) -> float:
    """The pause (ms) each wrk connection takes between an answer and its next request, for
    ``rate`` in all: a connection's cycle is pause + answer time, so the pause is the
    cycle the rate needs minus the answer time measured at about that rate (two 3 s
    rounds, starting from a 10 ms guess). Without this, a fixed pause tuned for 10 ms
    answers under-delivers whenever answers are slower (919 of 1,000/s in one soak)."""
    cycle_ms = WRK_CONNECTIONS * 1000 / rate
    delay_ms = max(0.0, cycle_ms - 10.0)
    requests = presigned(served.srv, served.akid, served.secret, served.key, 500)
    for _ in range(2):
        r = wrk.run(served.srv.xks_endpoint, requests, seconds=3,
                    connections=WRK_CONNECTIONS, threads=2, delay_ms=delay_ms)
        answer_ms = max(0.0, WRK_CONNECTIONS * 1000 / r.rps - delay_ms)
        delay_ms = max(0.0, cycle_ms - answer_ms)
    return delay_ms


def run_wrk_sustained(served: Served, tmp_path: Path, *, seconds: int, rate: float,
                      cycle_s: float, strict: bool) -> None:
    srv = served.srv
    assert srv.proc is not None
    pid = srv.proc.pid
    delay_ms = calibrate_pause(served, rate)
    windows: list[tuple[float, float]] = []
    rss: dict[str, int] = {}
    stop = threading.Event()

    def sample_rss() -> None:
        if not stop.wait(10):
            rss["t10"] = rss_kb(pid)

    results: list[wrk.LoadResult] = []
    # The decrypts' ciphertexts are made before the revoke/enable cycles start: a segment's
    # re-signing must not need the key enabled (it may fall in a revoked window).
    cts = seeds(srv, served.akid, served.secret, served.key)
    start = time.monotonic()
    threads = [threading.Thread(target=operator, args=(served, cycle_s, stop, windows),
                                daemon=True),
               threading.Thread(target=sample_rss, daemon=True)]
    for t in threads:
        t.start()
    try:
        left = seconds
        while left > 0:
            segment = min(SEGMENT_S, left)
            requests = presigned(srv, served.akid, served.secret, served.key, 2000, cts)
            results.append(wrk.run(srv.xks_endpoint, requests, seconds=segment,
                                   connections=WRK_CONNECTIONS, threads=2, classify=True,
                                   delay_ms=delay_ms, quantiles=True))
            left -= segment
        rss["end"] = rss_kb(pid)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    elapsed = time.monotonic() - start
    answers: Counter[str] = Counter()
    for r in results:
        answers.update(r.answers or {})
    total = sum(r.requests for r in results)
    achieved = total / sum(r.requests / r.rps for r in results)
    # The run's p99: of all its requests (the segments' distributions merged); the
    # worst segment's own p99 is printed beside it.
    p99 = wrk.merged_percentile_ms(results, 0.99)
    worst_segment_p99 = max(r.p99_ms for r in results)
    growth = (rss["end"] - rss["t10"]) / rss["t10"]
    socket_errors = sum(r.errors for r in results) - sum(
        n for k, n in answers.items() if k != "200")
    revoked = answers.get("400 InvalidStateException", 0)
    unexpected = {k: n for k, n in answers.items()
                  if k not in ("200", "400 InvalidStateException")}
    commits = {le: within(srv, "kms_audit_append_duration_seconds", le)
               for le in ("0.025", "0.1", "0.5")}
    audit = export_and_verify(srv, tmp_path / "export")
    ok_records = sum(1 for r in audit.records
                     if r["outcome"] == "ok" and r["op"] in ("xks.encrypt", "xks.decrypt"))
    revoked_s = sum(b - a for a, b in windows)
    print(f"\nsustained (wrk, {WRK_CONNECTIONS} connections, {delay_ms:.0f} ms mean pause): "
          f"{elapsed:.0f} s, target {rate:.0f}/s, achieved {achieved:.0f}/s, requests={total} "
          f"{dict(answers)}, socket errors={socket_errors}; revoke/enable cycles="
          f"{len(windows)} ({revoked_s:.1f} s revoked); latency ms p50="
          f"{wrk.merged_percentile_ms(results, 0.5):.1f} p99={p99:.1f} (target "
          f"{P99_TARGET_MS:.0f}; worst {SEGMENT_S} s segment {worst_segment_p99:.1f}) "
          f"p99.9={wrk.merged_percentile_ms(results, 0.999):.1f} max="
          f"{max(r.max_ms for r in results):.1f} mean="
          f"{sum(r.mean_ms * r.requests for r in results) / total:.1f}; RSS {rss['t10']} -> "
          f"{rss['end']} KiB "
          f"({growth:+.1%}); records verified={audit.report['record_count']}, xks ok records="
          f"{ok_records} >= acknowledged {answers.get('200', 0)}; audit commits (batches) "
          f"{commits['0.025'][1]}, over 25 ms {commits['0.025'][1] - commits['0.025'][0]}, "
          f"over 100 ms {commits['0.1'][1] - commits['0.1'][0]}, over 500 ms "
          f"{commits['0.5'][1] - commits['0.5'][0]}")
    assert len(windows) >= int(seconds // cycle_s) - 1
    assert unexpected == {} and socket_errors == 0
    assert revoked > 0  # revocation did bite ...
    assert revoked <= (revoked_s + 1.0 * len(windows)) * achieved * 1.5  # ... only then
    assert ok_records >= answers.get("200", 0)  # every acknowledged request is recorded
    if strict:
        assert p99 < P99_LIMIT_MS
    else:  # the 60 s run beside the other tests, its server logging every answer
        assert_tail_is_the_disks(srv, p99)
    assert growth < 0.10
    if strict:
        assert achieved >= 0.95 * rate, f"achieved {achieved:.0f}/s of {rate:.0f}/s"
        assert p99 <= P99_TARGET_MS, f"p99 {p99:.1f} ms"
