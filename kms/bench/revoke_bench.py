"""Revocation: from ``revoke`` returning to the first refusal, in the same process and in
another process on the same SQLite database."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from kms.audit.event import cli_actor
from kms.errors import InvalidStateError
from kms.keys.model import KeyUsage
from kms.runtime import Runtime

BOTH = frozenset({KeyUsage.ENCRYPT, KeyUsage.DECRYPT})


def same_process(rt: Runtime, rounds: int) -> float:
    rt.keys.create_key("revoke-same", BOTH, cli_actor("bench"))
    enc = rt.keys.encrypt("revoke-same", b"x", b"")
    delays = []
    for _ in range(rounds):
        for _ in range(50):
            rt.keys.decrypt("revoke-same", 1, enc.ciphertext, b"")
        rt.keys.revoke("revoke-same", "bench", cli_actor("bench"))
        start = time.perf_counter()
        try:
            rt.keys.decrypt("revoke-same", 1, enc.ciphertext, b"")
        except InvalidStateError:
            delays.append((time.perf_counter() - start) * 1000)
        else:
            raise RuntimeError("the first call after revoke was not refused")
        rt.keys.enable("revoke-same", cli_actor("bench"))
    return round(statistics.median(delays), 3)


def cross_process(rt: Runtime, env: dict[str, str], rounds: int) -> tuple[float, float]:
    """(median ms from revoke returning, median ms from revoke being called) to the other
    process's first refusal; the first is 0 when the refusal came before the return."""
    rt.keys.create_key("revoke-cross", BOTH, cli_actor("bench"))
    delays = []
    from_call = []
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, "-m", "kms.bench.revoke_probe", "revoke-cross"],
                                env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError("probe failed to start")
        time.sleep(0.2)
        called = time.time()
        rt.keys.revoke("revoke-cross", "bench", cli_actor("bench"))
        returned = time.time()
        line = proc.stdout.readline().split()
        proc.wait(timeout=30)
        if not line or line[0] != "REFUSED":
            raise RuntimeError("the other process never refused the key")
        delays.append(max(0.0, (float(line[1]) - returned) * 1000))
        from_call.append((float(line[1]) - called) * 1000)
        rt.keys.enable("revoke-cross", cli_actor("bench"))
    return round(statistics.median(delays), 3), round(statistics.median(from_call), 3)
