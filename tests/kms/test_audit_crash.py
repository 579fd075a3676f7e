"""Crash consistency of the audit log: kill -9 of ``kms serve`` under concurrent load.

Every request that got a success answer must have its record after the restart, and the
exported log must verify.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kms.client import XksClient
from kms.errors import KmsError
from tests.server import KmsServer

ROUNDS = 5
THREADS = 8


@pytest.fixture()
def server() -> Iterator[KmsServer]:
    srv = KmsServer()
    srv.cli("keys", "create", "k")
    srv.start()
    yield srv
    srv.stop()


def load_until_killed(srv: KmsServer, akid: str, secret: str) -> tuple[set[str], int]:
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    failures = [0]

    def worker() -> None:
        client = XksClient(srv.xks_endpoint, akid, secret, timeout=2.0)
        while not stop.is_set():
            rid = str(uuid.uuid4())
            try:
                client.encrypt("k", b"payload", b"aad", request_id=rid)
            except KmsError:
                failures[0] += 1
                continue
            with lock:
                acked.add(rid)
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # a busy machine may need a while to warm up
        time.sleep(0.25)
        with lock:
            if len(acked) >= 50:
                break
    srv.kill()  # SIGKILL mid-load
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    return acked, failures[0]


def test_kill_9_under_load_loses_no_acknowledged_record(server: KmsServer,
                                                       tmp_path: Path) -> None:
    akid, secret = server.add_credential()
    all_acked: set[str] = set()
    restarts = []
    for _ in range(ROUNDS):
        acked, _failed = load_until_killed(server, akid, secret)
        assert acked, "no request succeeded before the kill"
        all_acked |= acked
        start = time.monotonic()
        server.start()
        restarts.append(time.monotonic() - start)
    export = tmp_path / "export"
    server.cli("audit", "export", str(export))
    result = server.cli("audit", "verify", str(export), "--json", check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["status"] == "valid", report
    logged = set()
    for path in sorted((export / "records").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            rec = json.loads(line)
            if rec["op"] == "xks.encrypt" and rec["outcome"] == "ok":
                logged.add(rec["request"]["kmsRequestId"])
    missing = all_acked - logged
    print(f"crash rounds={ROUNDS}: acknowledged={len(all_acked)} logged ok={len(logged)} "
          f"missing={len(missing)} records={report['record_count']} "
          f"restart s={', '.join(f'{r:.2f}' for r in restarts)}")
    assert missing == set()
