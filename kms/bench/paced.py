"""XKS encrypt latency at a paced load, with the server's CPU per request.

``python -m kms.bench.paced [PAUSE_MS] [SECONDS]``: a fresh ``kms serve`` (one worker,
SQLite, SoftHSM, audit on), wrk with 32 connections, each pausing PAUSE_MS on average
(uniform in [pause/2, 3 pause/2]) between an answer and its next request (0: unpaced).
Prints the rate, latency percentiles, and CPU time per request of the server's event loop
thread, of the whole server process and of its children (the audit writer process). The
server inherits the environment: ``KMS_AUDIT_WRITER=thread`` compares the writer thread,
``KMS_HSM_WORKER=off`` the HSM calls on the event loop.
docs/benchmarks-history.md (fifth pass) has the figures.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

from kms.bench import wrk, xks_load
from kms.bench.processes import KmsProcess

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(stat_path: str) -> float:
    """utime + stime of a /proc stat file, in seconds (0 if the process is gone)."""
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _cpu(pid: int) -> tuple[float, float, float]:
    """CPU seconds so far: the main (event loop) thread, the process, its children."""
    children: list[str] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children += f.read().split()
    return (_cpu_s(f"/proc/{pid}/task/{pid}/stat"), _cpu_s(f"/proc/{pid}/stat"),
            sum(_cpu_s(f"/proc/{child}/stat") for child in children))


def _hsm_worker(url: str) -> str:
    """The HSM worker process as /readyz reports it: off, or the calls the server made
    itself (fallbacks) since it started."""
    with urllib.request.urlopen(url + "/readyz", timeout=10) as r:  # noqa: S310 - loopback
        worker = json.load(r)["hsm"].get("worker")
    return "off" if worker is None else f"on ({worker['fallbacks']} fallbacks)"


def run(pause_ms: float, seconds: int) -> str:
    kms = KmsProcess([xks_load.KEY])
    try:
        kms.start()
        assert kms.proc is not None
        base = f"{kms.url}/xks/kms/xks/v1/keys/{xks_load.KEY}/encrypt"
        aad = os.urandom(32)
        requests = xks_load.presign(base, kms.akid, kms.secret,
                                    [xks_load.encrypt_body(aad) for _ in range(2000)])
        wrk.run(base, requests[:200], seconds=2)  # warm-up
        time.sleep(1)
        before = _cpu(kms.proc.pid)
        r = wrk.run(base, requests, seconds=seconds, delay_ms=pause_ms, classify=True)
        after = _cpu(kms.proc.pid)
        worker = _hsm_worker(kms.url)
    finally:
        kms.stop()
    per = [1e6 * (b - a) / max(1, r.requests) for a, b in zip(before, after, strict=True)]
    writer = os.environ.get("KMS_AUDIT_WRITER", "process")
    return (f"audit writer {writer}, HSM worker {worker}, pause {pause_ms:g} ms: "
            f"{r.rps:,.0f} req/s, p50 "
            f"{r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, p99.9 {r.p999_ms:.1f} ms, answers "
            f"{r.answers}; CPU per request: event loop thread {per[0]:.0f} us, server "
            f"process {per[1]:.0f} us, its children {per[2]:.0f} us")


def main(argv: list[str]) -> int:
    try:
        pause = float(argv[0]) if argv else 21.0
        seconds = int(argv[1]) if len(argv) > 1 else 15
    except ValueError:
        print("usage: python -m kms.bench.paced [PAUSE_MS] [SECONDS]", file=sys.stderr)
        return 2
    if not wrk.available():
        print("wrk not found (apt-get install wrk)", file=sys.stderr)
        return 1
    print(run(pause, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
