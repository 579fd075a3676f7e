"""Issue 9 item 6: sustained XKS load with revocation cycles.

CI version: 60 s at a paced RATE of encrypts and decrypts (half each) from 4 client threads,
one revoke/enable cycle every 20 s (``kms keys revoke`` / ``enable`` from another process,
as an operator would). Expected: no error but InvalidStateException, and that only while the
key is revoked; p99 measured (and held to AWS's 250 ms budget); server RSS growth under 10 %
between the 10th and the last second; the exported audit log verifies and holds every
acknowledged request.

Soak version (not in CI): ``KMS_SOAK=1 .venv/bin/pytest -s -k soak tests/reliability``, 10
minutes, one cycle a minute, at KMS_SOAK_RATE (default 1000/s, issue 9's figure; this
2-core machine does not reach it with a Python client on the same cores: the test then
fails on the achieved rate and prints it, which is the honest result).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import Served
from tests.reliability.harness import (
    ENV_SOAK,
    Load,
    export_and_verify,
    kinds,
    percentile,
    rss_kb,
    seeds,
    wait_until,
)

RATE = 100.0  # requests/s the 2-core CI machine sustains beside the other tests' noise
P99_LIMIT_MS = 250.0


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

    def operator() -> None:
        n = 0
        while not stop.wait(cycle_s - 2.0 if n == 0 else cycle_s - 1.0):
            n += 1
            t0 = time.monotonic()
            srv.cli("keys", "revoke", "--reason", f"soak cycle {n}", served.key)
            time.sleep(1.0)
            srv.cli("keys", "enable", served.key)
            windows.append((t0, time.monotonic()))

    start = time.monotonic()
    load.start()
    ops = threading.Thread(target=operator, daemon=True)
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
    assert percentile(lat, 0.99) < P99_LIMIT_MS
    assert growth < 0.10
    assert lost == set()


@pytest.mark.slow
def test_sustained_load_60s(served: Served, tmp_path: Path) -> None:
    run_sustained(served, tmp_path, seconds=60, rate=RATE, cycle_s=20)


@pytest.mark.skipif(not ENV_SOAK, reason="10-minute soak: set KMS_SOAK=1")
def test_sustained_load_soak_10min(served: Served, tmp_path: Path) -> None:
    run_sustained(served, tmp_path, seconds=600,
                  rate=float(os.environ.get("KMS_SOAK_RATE", "1000")), cycle_s=60)
