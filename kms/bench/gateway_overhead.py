"""Latency the AI gateway adds (encrypted logging on, data-key cache on) over calling the
fake upstream directly, 16 concurrent clients. The gateway is driven only through its CLI
and HTTP API (the KMS package does not import it)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from kms.bench.processes import BIN, KmsProcess, free_port, wait_http

CLIENTS = 16
BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "hello there"}]}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _latencies(url: str, headers: dict[str, str], total: int) -> list[float]:
    out: list[float] = []
    per_client = max(1, total // CLIENTS)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=CLIENTS)) as c:
        async def client() -> None:
            for _ in range(per_client):
                start = time.perf_counter()
                r = await c.post(url, json=BODY, headers=headers)
                if r.status_code != 200:
                    raise RuntimeError(f"{url} answered {r.status_code}")
                out.append((time.perf_counter() - start) * 1000)

        for _ in range(2):  # warm the connections and the data-key cache
            await c.post(url, json=BODY, headers=headers)
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return out


def run(total: int) -> dict[str, float]:
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
        direct = asyncio.run(_latencies(f"http://127.0.0.1:{up_port}/v1/chat/completions",
                                        {"Authorization": "Bearer sk-bench-provider-key"},
                                        total))
        via = asyncio.run(_latencies(f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                                     {"Authorization": f"Bearer {vkey}"}, total))
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        kms.stop()
        shutil.rmtree(home, ignore_errors=True)
    return {
        "p50": round(statistics.median(via) - statistics.median(direct), 3),
        "p99": round(_percentile(via, 0.99) - _percentile(direct, 0.99), 3),
        "direct_p50": round(statistics.median(direct), 3),
        "gateway_p50": round(statistics.median(via), 3),
        "requests": len(via),
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
