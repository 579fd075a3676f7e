"""``python -m kms.bench.xks_ab [ROUNDS] [SECONDS] [OLD_PYTHONPATH]``: XKS encrypt
throughput of this code, the bare reference (kms/bench/bare_xks.py) and the echo baseline,
and optionally of other code (a worktree of an older commit, put first on ``PYTHONPATH``),
taking turns under the bench's wrk load, ROUNDS rounds of SECONDS each (the order reversed
every other round). Prints each round's rates, the servers' CPU per request (their main
process, from ``/proc``), and the medians of the same-round ratios: on a machine whose
speed moves minute to minute, only those compare."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable

from kms.bench import wrk
from kms.bench.bare_xks import BareProcess
from kms.bench.processes import EchoProcess, KmsProcess
from kms.bench.xks_load import KEY, echo_requests, encrypt_body, presign

PATH = f"/kms/xks/v1/keys/{KEY}/encrypt"


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 5
    seconds = int(argv[1]) if len(argv) > 1 else 5
    old_path = argv[2] if len(argv) > 2 else None
    servers: list[KmsProcess] = []
    echo = bare = None
    try:
        new = KmsProcess([KEY])
        new.start()
        servers.append(new)
        bodies = [encrypt_body(os.urandom(32)) for _ in range(2000)]
        targets: dict[str, tuple[str, list[wrk.Prepared], Callable[[], int]]] = {}

        def add(name: str, url: str, akid: str, secret: str, pid: int) -> None:
            targets[name] = (url, presign(url, akid, secret, bodies),
                             lambda: _cpu_ticks(pid))

        assert new.proc is not None
        add("new", f"{new.url}/xks{PATH}", new.akid, new.secret, new.proc.pid)
        if old_path:
            old = KmsProcess([KEY], env={"PYTHONPATH": old_path})
            old.start()
            servers.append(old)
            assert old.proc is not None
            add("old", f"{old.url}/xks{PATH}", old.akid, old.secret, old.proc.pid)
        bare = BareProcess(new.akid, new.secret)
        add("bare", f"{bare.url}{PATH}", new.akid, new.secret, bare.proc.pid)
        echo = EchoProcess()
        echo_pid = echo.proc.pid
        targets["echo"] = (echo.url + "/echo", echo_requests(bodies[0]),
                           lambda: _cpu_ticks(echo_pid))
        for url, requests, _ in targets.values():
            wrk.run(url, requests[:20], seconds=1)  # warm
        rps: dict[str, list[float]] = {name: [] for name in targets}
        cpu: dict[str, list[float]] = {name: [] for name in targets}
        tick = os.sysconf("SC_CLK_TCK")
        for i in range(rounds):
            names = list(targets) if i % 2 == 0 else list(reversed(targets))
            for name in names:
                url, requests, ticks = targets[name]
                before = ticks()
                result = wrk.run(url, requests, seconds=seconds)
                rps[name].append(result.rps)
                cpu[name].append((ticks() - before) / tick / max(1, result.requests) * 1e6)
            print(f"round {i}: " + ", ".join(
                f"{n} {rps[n][-1]:,.0f}/s ({cpu[n][-1]:.0f} us CPU)" for n in targets),
                flush=True)
    finally:
        for server in servers:
            server.stop()
        if echo is not None:
            echo.stop()
        if bare is not None:
            bare.stop()

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rps[a], rps[b], strict=True))

    print("medians of same-round ratios: " + ", ".join(
        f"{a}/{b} {ratio(a, b):.3f}" for a, b in
        [(n, "echo") for n in targets if n != "echo"] + [("new", "bare")]
        + ([("new", "old")] if old_path else [])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
