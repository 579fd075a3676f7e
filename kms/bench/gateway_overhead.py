"""Latency the AI gateway adds (encrypted logging on, data-key cache on) over calling the
fake upstream directly, 16 concurrent clients. The gateway is driven only through its CLI
and HTTP API (the KMS package does not import it).

The clients are wrk's (C, event-driven) 16 connections, each pausing PAUSE_MS on average
between an answer and its next request: the load of 16 users whose calls the gateway
relays, not a closed loop that saturates it (whose "overhead" would be the queue in front
of it). Direct and gateway runs alternate for ROUNDS rounds, so both see the same machine;
the overhead is the median over rounds of the gateway's percentile minus the direct one.
Before wrk, 16 closed-loop httpx clients in one Python process were the bottleneck
(direct p50 15-28 ms), which hid the gateway's own milliseconds in ±10 ms of noise.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kms.bench import wrk
from kms.bench.processes import BIN, KmsProcess, free_port, wait_http

CLIENTS = 16
PAUSE_MS = 50.0  # per client, between an answer and its next request (~300 requests/s)
ROUNDS = 3
BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "hello there"}]}


def _request(path: str, token: str) -> wrk.Prepared:
    return wrk.Prepared("POST", path, {"Authorization": f"Bearer {token}",
                                       "Content-Type": "application/json"},
                        json.dumps(BODY).encode())


def _rounds(targets: list[tuple[str, wrk.Prepared]], seconds: int) -> list[list[wrk.LoadResult]]:
    """ROUNDS alternating wrk runs per target (after a short warm-up of each)."""
    for url, req in targets:
        wrk.run(url, [req], seconds=1, connections=CLIENTS, threads=1)
    out: list[list[wrk.LoadResult]] = [[] for _ in targets]
    for _ in range(ROUNDS):
        for i, (url, req) in enumerate(targets):
            r = wrk.run(url, [req], seconds=seconds, connections=CLIENTS, threads=1,
                        delay_ms=PAUSE_MS, classify=True)
            if r.errors or set(r.answers or {}) != {"200"}:
                raise RuntimeError(f"{url} answered {r.answers}")
            out[i].append(r)
    return out


def run(seconds: int) -> dict[str, float]:
    kms = KmsProcess(["gw-bench"])
    home = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    env = dict(os.environ, GATEWAY_HOME=str(home))
    env.pop("GATEWAY_DATABASE_URL", None)
    procs: list[subprocess.Popen[bytes]] = []

    def gw(*args: str, stdin: str = "") -> str:
        return subprocess.run([str(BIN / "gateway"), *args], env=env, input=stdin, text=True,
                              capture_output=True, check=True).stdout

    try:
        kms.start()
        up_port, gw_port = free_port(), free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "kms.bench.fake_upstream",
                                       str(up_port)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", procs[-1])
        gw("init")
        gw("tenants", "create", "bench", "--xks-endpoint", f"{kms.url}/xks", "--key-id",
           "gw-bench", "--access-key-id", kms.akid, stdin=kms.secret)
        gw("provider-keys", "add", "bench", "--provider", "openai", "--base-url",
           f"http://127.0.0.1:{up_port}/v1", stdin="sk-bench-provider-key")
        vkey = json.loads(gw("virtual-keys", "create", "bench", "--json"))["key"]
        procs.append(subprocess.Popen([str(BIN / "gateway"), "serve", "--port", str(gw_port)],
                                      env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        _wait_tcp(gw_port, procs[-1])
        path = "/v1/chat/completions"
        direct, via = _rounds(
            [(f"http://127.0.0.1:{up_port}{path}", _request(path, "sk-bench-provider-key")),
             (f"http://127.0.0.1:{gw_port}{path}", _request(path, vkey))], seconds)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        kms.stop()
        shutil.rmtree(home, ignore_errors=True)

    def added(pick: Callable[[wrk.LoadResult], float]) -> float:
        return round(statistics.median(map(pick, via)) - statistics.median(map(pick, direct)),
                     3)

    return {
        "p50": added(lambda r: r.p50_ms),
        "p99": added(lambda r: r.p99_ms),
        "direct_p50": round(statistics.median(r.p50_ms for r in direct), 3),
        "gateway_p50": round(statistics.median(r.p50_ms for r in via), 3),
        "requests": sum(r.requests for r in via),
        "gateway_rps": round(statistics.median(r.rps for r in via), 1),
    }


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gateway serve exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("gateway serve did not start")
