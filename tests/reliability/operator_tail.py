"""Does the soak's operator lift the XKS latency tail? 30 s wrk runs paced for 1,000/s
(the soak's 32 connections) against one ``kms serve``, in rounds of three: no operator,
the CLI operator (``kms keys revoke`` / ``enable`` processes, as the soak runs them), and
the same cycle through the admin HTTP API; a revoke, 1 s, an enable every 5 s. WORKERS
is ``kms serve --workers`` (1 by default, as in the soak).

    PYTHONPATH=. .venv/bin/python -m tests.reliability.operator_tail [ROUNDS [WORKERS]]
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import httpx

from kms.bench import wrk
from tests.reliability.conftest import KEY, Served
from tests.reliability.harness import presigned, seeds
from tests.reliability.test_sustained_load import WRK_CONNECTIONS, calibrate_pause
from tests.server import KmsServer

CYCLE_WAIT_S = 4.0  # then revoke, 1 s, enable: one cycle per 5 s


def main(rounds: int, workers: int) -> None:
    srv = KmsServer()
    srv.cli("keys", "create", KEY)
    akid, secret = srv.add_credential()
    token = str(srv.cli_json("tokens", "create", "--role", "admin", "operator")["token"])
    srv.start("--workers", str(workers))
    try:
        served = Served(srv, akid, secret)
        delay_ms = calibrate_pause(served, 1000.0)
        cts = seeds(srv, akid, secret, KEY)

        def cli(stop: threading.Event) -> None:
            while not stop.wait(CYCLE_WAIT_S):
                srv.cli("keys", "revoke", "--reason", "operator_tail", KEY)
                time.sleep(1.0)
                srv.cli("keys", "enable", KEY)

        def http(stop: threading.Event) -> None:
            with httpx.Client(base_url=srv.url + "/admin/v1", timeout=10,
                              headers={"Authorization": f"Bearer {token}"}) as c:
                while not stop.wait(CYCLE_WAIT_S):
                    c.post(f"/keys/{KEY}/revoke", json={"reason": "operator_tail"}
                           ).raise_for_status()
                    time.sleep(1.0)
                    c.post(f"/keys/{KEY}/enable").raise_for_status()

        operators: dict[str, Callable[[threading.Event], None] | None] = {
            "none": None, "cli": cli, "http": http}
        for n in range(rounds):
            for name, operator in operators.items():
                requests = presigned(srv, akid, secret, KEY, 2000, cts)
                stop = threading.Event()
                thread = None if operator is None else threading.Thread(
                    target=operator, args=(stop,))
                if thread is not None:
                    thread.start()
                r = wrk.run(srv.xks_endpoint, requests, seconds=30,
                            connections=WRK_CONNECTIONS, threads=2, classify=True,
                            delay_ms=delay_ms)
                stop.set()
                if thread is not None:
                    thread.join()
                print(f"round {n} workers {workers} operator {name}: {r.rps:.0f}/s p50 "
                      f"{r.p50_ms:.1f} ms p99 {r.p99_ms:.1f} ms answers {r.answers}",
                      flush=True)
    finally:
        srv.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2,
         int(sys.argv[2]) if len(sys.argv) > 2 else 1)
