"""Issue 9 item 1: HSM faults under XKS load, then the HSM comes back.

Two faults, while 4 threads send encrypts and decrypts:

* the server's SoftHSM token directory is renamed away (shared/facts.md: handles go stale,
  look-ups fail, listing fails);
* the module answers every cryptographic call with CKR_DEVICE_ERROR while slots, sessions
  and login still work (a failing HSM's crypto engine): ``kms serve`` loads
  ``pkcs11_fault_shim.c``, a PKCS#11 module built here that forwards to SoftHSM and fails
  those calls while a fault file exists.

Expected for both: every failed answer is 503 DependencyTimeoutException inside AWS KMS's
250 ms budget (never a 500, never a hang), XKS health says UNAVAILABLE (within its cache
HEALTH_CACHE_S), /readyz is 503; once the fault is gone the same process serves again (no
restart) and every acknowledged request is in the audit log, which verifies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from hsm.pkcs11_hsm import RECONNECT_BACKOFF_S
from kms.client import XksClient
from kms.xks.handler import HEALTH_CACHE_S
from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import GatewayProcess
from tests.reliability.conftest import KEY
from tests.reliability.disk_probe import DiskProbe
from tests.reliability.faults import FaultRun, run_across_fault
from tests.reliability.harness import (
    ACCESS_LOG,
    export_and_verify,
    kinds,
    percentile,
    token_dir,
    wait_until,
    within,
    xks_answers,
)
from tests.server import KmsServer

BUDGET_S = 0.250  # AWS KMS's timeout for one proxy call
FAULT_S = 3.0


def fleet_status(client: XksClient) -> str:
    return str(client.health()["ekmFleetDetails"][0]["healthStatus"])


def _epoch(timestamp: str) -> float:
    """A service log timestamp (ISO 8601, UTC) as seconds since the epoch."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def metric(srv: KmsServer, name: str) -> float:
    found = re.search(rf"^{name} ([0-9.e+]+)$", httpx.get(srv.url + "/metrics", timeout=10).text,
                      re.MULTILINE)
    assert found is not None, f"no {name} in /metrics"
    return float(found.group(1))


def fault_under_load(name: str, srv: KmsServer, akid: str, secret: str, tmp_path: Path,
                     inject: Callable[[], None], heal: Callable[[], None]) -> FaultRun:
    """XKS load across an HSM fault, with every property issue 9 asks of it checked: each
    failure a 503 DependencyTimeoutException inside the 250 ms budget (as the server timed
    it; the client's p99 too, its max under 1 s), health UNAVAILABLE and /readyz 503 during
    the fault while /healthz stays fast (the event loop never waits for the HSM), service
    back in the same process afterwards, every acknowledged request in the verified log."""
    assert srv.proc is not None
    pid = srv.proc.pid
    client = XksClient(srv.xks_endpoint, akid, secret)
    assert fleet_status(client) == "ACTIVE"
    seen: dict[str, float] = {}

    def while_faulty() -> None:
        seen["unavailable_after"] = wait_until(
            lambda: fleet_status(client) == "UNAVAILABLE", HEALTH_CACHE_S + 1.5)
        ready = httpx.get(srv.url + "/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["hsm"]["status"] == "UNAVAILABLE"
        with httpx.Client(timeout=5) as plain:
            waits = []
            for _ in range(40):
                started = time.monotonic()
                assert plain.get(srv.url + "/healthz").status_code == 200
                waits.append(time.monotonic() - started)
                time.sleep(0.01)
        seen["healthz_max_ms"] = max(waits) * 1000

    with DiskProbe(tmp_path) as disk:
        run = run_across_fault(srv, akid, secret, KEY, inject=inject, heal=heal,
                               hold_s=FAULT_S, during_fault=while_faulty)
    active_after = wait_until(lambda: fleet_status(client) == "ACTIVE", HEALTH_CACHE_S + 1.5)
    assert httpx.get(srv.url + "/readyz", timeout=5).status_code == 200
    client.close()
    during, failures = run.during(), run.failures()
    latencies = [a.latency for a in failures]
    answers = xks_answers(srv)
    refused = [a.seconds for a in answers if a.status == 503]
    fast, total = within(srv, "kms_request_duration_seconds", "0.25", 'endpoint="xks.')
    hsm_fast, hsm_total = within(srv, "kms_hsm_call_duration_seconds", "0.25")
    audit_fast, audit_total = within(srv, "kms_audit_append_duration_seconds", "0.25")
    slowest = ", ".join(map(str, sorted(answers, reverse=True)[:5]))
    print(f"\n{run.summary(name)}; failure latency p50 {percentile(latencies, 0.5) * 1000:.1f}"
          f" ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms; server side: {fast} of "
          f"{total} XKS calls answered within {BUDGET_S * 1000:.0f} ms ({len(refused)} 503s, "
          f"the slowest {max(refused, default=0) * 1000:.1f} ms), {hsm_fast} of {hsm_total} "
          f"HSM calls and {audit_fast} of {audit_total} audit commits within it; slowest "
          f"answers {slowest}; health UNAVAILABLE after {seen['unavailable_after']:.2f} s, "
          f"ACTIVE {active_after:.2f} s after the heal; /healthz during the fault max "
          f"{seen['healthz_max_ms']:.1f} ms; disk syncs over 20 ms: {len(disk.stalls)}, the "
          f"longest {disk.longest() * 1000:.0f} ms")
    assert during, "no request was sent during the fault"
    assert {a.error for a in failures} == {"DependencyTimeoutException"}, kinds(failures)
    assert all(a.status == 503 for a in failures)
    assert sum(not a.ok for a in during) >= 0.9 * len(during), kinds(during)
    # Every refusal inside AWS's budget as the server timed it, each HSM call too (lock
    # waits and rebuilds included); of all answers at least 99.9 %, none after 1 s. (One
    # CI run had 1 of 1,819 answers over 250 ms; the slowest answers printed here then
    # showed the first request after start-up at 219 ms, waiting for the audit writer
    # process: kms serve now opens its port once that is ready.)
    # A refusal over budget is allowed only where the disk held it: where its own part
    # (all but the wait for its durable audit record, which every answer makes) was within
    # budget and the rest was the audit commit, or where the disk probe saw a stall as
    # long as the time it is over (tests/reliability/disk_probe.py: syncs stall for
    # 200-800 ms at times on this VM). The service log gives each answer's audit wait: the
    # probe alone missed one (a CI run, 2026-11-28: a 360 ms 503 with no probe stall then,
    # its probe's next syncs stalled 45 and 56 ms, 0.15 s later). An HSM call over budget
    # only while the disk stalled that long (SoftHSM reads and locks its token files on
    # every call), and never over 1 s.
    assert len(refused) >= len(failures)
    over = [a for a in answers if a.seconds >= BUDGET_S]
    the_disks = [a for a in over if a.service < BUDGET_S or disk.covers(
        _epoch(a.at) - a.seconds, _epoch(a.at), a.seconds - BUDGET_S)]
    unexplained_503s = [str(a) for a in over if a.status == 503 and a not in the_disks]
    assert not unexplained_503s, (unexplained_503s, disk.stalls)
    hsm_in_1s, _ = within(srv, "kms_hsm_call_duration_seconds", "1.0")
    assert hsm_in_1s == hsm_total
    assert hsm_fast == hsm_total or disk.longest() >= BUDGET_S / 2, disk.stalls
    assert fast + len(the_disks) >= 0.999 * total
    assert within(srv, "kms_request_duration_seconds", "1.0", 'endpoint="xks.')[0] == total
    assert percentile(latencies, 0.99) < BUDGET_S
    assert run.max_failure_ms() < 1000  # as the client saw it (with its own stalls)
    assert seen["healthz_max_ms"] < BUDGET_S * 1000
    assert all(a.ok for a in run.settled()), kinds(run.settled())
    assert srv.proc.pid == pid and srv.proc.poll() is None
    audit = export_and_verify(srv, tmp_path / "export")
    assert {a.rid for a in run.answers if a.ok} - audit.ok_request_ids == set()
    return run


def test_token_removed_under_load_503_fast_then_heals_without_restart(tmp_path: Path) -> None:
    srv = KmsServer(extra_env=ACCESS_LOG)
    try:
        srv.cli("keys", "create", KEY)
        akid, secret = srv.add_credential()
        srv.start()
        directory = token_dir(srv)
        parked = tmp_path / "parked-token"
        fault_under_load("HSM token removed", srv, akid, secret, tmp_path,
                         inject=lambda: os.rename(directory, parked),
                         heal=lambda: os.rename(parked, directory))
    finally:
        srv.stop()

SHIM_SOURCE = Path(__file__).with_name("pkcs11_fault_shim.c")


@pytest.fixture(scope="module")
def fault_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler to build the fault-injecting PKCS#11 module: make install")
    out = tmp_path_factory.mktemp("shim") / "pkcs11_fault_shim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
                    str(out), str(SHIM_SOURCE), "-ldl"], check=True, capture_output=True)
    return out


def faulty_kms(shim: Path, softhsm_module: str, fault: Path, uri_prefix: str = "xks") -> KmsServer:
    """``kms init`` + ``serve`` on the fault-injecting module (no fault while ``fault`` is
    absent)."""
    return KmsServer(extra_env={**ACCESS_LOG, "KMS_PKCS11_MODULE": str(shim),
                                "PKCS11_SHIM_MODULE": softhsm_module,
                                "PKCS11_SHIM_FAULT_FILE": str(fault)}, uri_prefix=uri_prefix)


def test_device_errors_under_load_503_fast_then_heal_without_restart(
        fault_shim: Path, softhsm_module: str, tmp_path: Path) -> None:
    fault = tmp_path / "device-error"
    srv = faulty_kms(fault_shim, softhsm_module, fault)
    try:
        srv.cli("keys", "create", KEY)
        akid, secret = srv.add_credential()
        srv.start()
        before = metric(srv, "kms_hsm_reconnects")
        run = fault_under_load("HSM device errors", srv, akid, secret, tmp_path,
                               inject=fault.touch, heal=fault.unlink)
        rebuilds = metric(srv, "kms_hsm_reconnects") - before
        fault_s = run.healed_at - run.fault_at
        print(f"connection rebuilds during the {fault_s:.1f} s fault: {rebuilds:.0f} "
              f"for {len(run.failures())} failed requests")
        # Fail fast: about one rebuild per back-off interval (52-57 measured in 5.2 s).
        # Each failing request used to rebuild (one per failure), and a request whose fresh
        # connection failed at once rebuilt it a second time (114 in 5.3 s).
        assert rebuilds <= 1.5 * fault_s / RECONNECT_BACKOFF_S + 5
    finally:
        srv.stop()

def test_gateway_answers_its_tenant_503_while_the_hsm_fails(
        fault_shim: Path, softhsm_module: str, tmp_path: Path) -> None:
    """With the HSM failing behind the tenant's KMS, the tenant's requests get a clear 503
    ``customer_key_unreachable`` (not a 500, not the revoked 403) as soon as one needs the
    KMS, and 200 again once the HSM is back."""
    fault = tmp_path / "device-error"
    kms = faulty_kms(fault_shim, softhsm_module, fault, uri_prefix="cmk")
    upstream = FakeUpstream()
    gateway = GatewayProcess()
    try:
        kms.cli("keys", "create", "tenant-h")
        akid, secret = kms.add_credential()
        kms.start()
        upstream.start()
        gateway.cli("tenants", "create", "h", "--xks-endpoint", kms.xks_endpoint, "--key-id",
                    "tenant-h", "--access-key-id", akid, "--check", stdin=secret + "\n")
        gateway.cli("provider-keys", "add", "h", "--provider", "openai", "--base-url",
                    upstream.base_url, stdin=f"sk-h-{uuid.uuid4().hex}\n")
        gateway.start()
        key = gateway.cli_json("virtual-keys", "create", "h")["key"]

        def post() -> httpx.Response:
            return httpx.post(gateway.url + "/v1/chat/completions", timeout=20,
                              json={"model": "gpt-4o",
                                    "messages": [{"role": "user", "content": "hello"}]},
                              headers={"Authorization": f"Bearer {key}"})

        assert post().status_code == 200
        fault.touch()
        try:
            cut_off = wait_until(lambda: post().status_code == 503, 10)
            refused = post()
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "customer_key_unreachable"
        finally:
            fault.unlink()
        back = wait_until(lambda: post().status_code == 200, 10)
        print(f"\ngateway over a failing HSM: 503 customer_key_unreachable {cut_off:.2f} s "
              f"after the fault began, 200 again {back:.2f} s after it ended")
        assert "Traceback" not in gateway.log()
    finally:
        gateway.stop()
        upstream.stop()
        kms.stop()
