"""Issue 9 item 5: abuse of the XKS edge.

* bodies over the 64 KiB limit, with and without Content-Length, are refused (501) before
  they are read in full, fast, and the server's memory does not grow with them;
* slow clients are cut off: a request head sent a byte at a time is closed by the server
  (kms/http_protocol.py HEADER_TIMEOUT_S), a body that trickles is refused
  (kms/xks/routes.py BODY_TIMEOUT_S);
* a flood of 10,000 bad-signature requests (from another source address) against valid
  traffic: the share of the server left to valid traffic during the flood is >= 0.8; the
  flood's failures are audited and logged individually only up to the per-source budget
  (kms/xks/handler.py), beyond it they are paced (kms/xks/pacing.py); the pace holds for
  bad signatures and unknown paths, spares the flooding address's valid requests, and
  keys on X-Forwarded-For behind a same-host proxy;
* per-store throttling: ``kms xks stores set-throttle default N`` caps the store at N/s.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from kms.bench import wrk
from kms.http_protocol import HEADER_TIMEOUT_S
from kms.xks.handler import AUTH_FAILURE_AUDIT_BURST, AUTH_FAILURE_AUDIT_RATE
from kms.xks.pacing import REFUSALS_PER_SECOND
from kms.xks.routes import BODY_TIMEOUT_S
from tests.reliability.conftest import Served
from tests.reliability.harness import (
    AAD,
    PLAINTEXT,
    Load,
    Signer,
    cpu_seconds,
    encrypt_body,
    export_and_verify,
    presigned,
    rss_kb,
    wait_until,
)
from tests.server import ROOT, KmsServer

TEN_MB = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One server for the module (each kms init costs seconds of the CI budget)."""
    srv = KmsServer()
    srv.cli("keys", "create", "k")
    akid, secret = srv.add_credential()
    srv.start()
    yield Served(srv, akid, secret)
    srv.stop()
PATH = "/xks/kms/xks/v1/keys/k/encrypt"


def send_oversize(port: int, chunked: bool) -> tuple[float, bytes]:
    """Send a 10 MB body (streaming it from a thread); time to the server's answer."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    head = f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {TEN_MB}\r\n\r\n"
    chunk = b"a" * 65536
    frame = b"10000\r\n" + chunk + b"\r\n" if chunked else chunk

    def stream() -> None:
        try:
            for _ in range(TEN_MB // len(chunk)):
                s.sendall(frame)
        except OSError:
            pass  # the server answered and closed: that is the point

    start = time.monotonic()
    s.sendall(head.encode())
    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    answer = s.recv(4096)
    elapsed = time.monotonic() - start
    s.close()
    sender.join(timeout=10)
    return elapsed, answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_bodies_refused_before_parsing(served: Served, chunked: bool) -> None:
    srv = served.srv
    assert srv.proc is not None
    before = rss_kb(srv.proc.pid)
    times = []
    for _ in range(5):
        elapsed, answer = send_oversize(srv.port, chunked)
        assert answer.startswith(b"HTTP/1.1 501"), answer[:200]
        assert b"UnsupportedOperationException" in answer or b"content-length" in answer
        times.append(elapsed)
    growth_kb = rss_kb(srv.proc.pid) - before
    print(f"\n10 MB body ({'chunked' if chunked else 'content-length'}) x5: answered 501 in "
          f"max {max(times) * 1000:.1f} ms, server RSS growth {growth_kb} KiB")
    assert max(times) < 1.0
    assert growth_kb < 8 * 1024  # 50 MB were offered; nothing like it is kept
    assert httpx.get(srv.url + "/healthz").status_code == 200


def test_slowloris_head_is_cut_off(served: Served) -> None:
    s = socket.create_connection(("127.0.0.1", served.srv.port))
    s.settimeout(0.2)
    head = b"POST /xks/kms/xks/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    start = time.monotonic()
    closed_after = None
    i = 0
    while time.monotonic() - start < HEADER_TIMEOUT_S + 5:
        try:
            s.sendall(head[i:i + 1] if i < len(head) else b"a")
        except OSError:
            closed_after = time.monotonic() - start
            break
        i += 1
        try:
            if s.recv(100) == b"":
                closed_after = time.monotonic() - start
                break
        except TimeoutError:
            pass
        except OSError:
            closed_after = time.monotonic() - start
            break
    s.close()
    print(f"\nslowloris: {i} bytes sent one at a time, closed by the server after "
          f"{closed_after} s (HEADER_TIMEOUT_S={HEADER_TIMEOUT_S})")
    assert closed_after is not None and closed_after < HEADER_TIMEOUT_S + 2


def test_slow_body_is_refused(served: Served) -> None:
    s = socket.create_connection(("127.0.0.1", served.srv.port))
    s.settimeout(BODY_TIMEOUT_S + 5)
    s.sendall(f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
              .encode())
    start = time.monotonic()
    answer = b""

    def trickle() -> None:
        try:
            for _ in range(1000):
                s.sendall(b"{")
                time.sleep(0.5)
        except OSError:
            pass

    threading.Thread(target=trickle, daemon=True).start()
    answer = s.recv(4096)
    elapsed = time.monotonic() - start
    while b"\r\n\r\n{" not in answer and len(answer) < 4096:
        more = s.recv(4096)
        if not more:
            break
        answer += more
    s.close()
    print(f"\nslow body: refused after {elapsed:.2f} s: {answer[:40]!r}")
    assert answer.startswith(b"HTTP/1.1 400") and b"not received in time" in answer
    assert elapsed < BODY_TIMEOUT_S + 2


FLOOD = 10_000
VALID_CONNECTIONS = 16
MIN_RATIO = 0.8  # issue 9: the flood slows valid traffic by no more than 20 %
WINDOW_S = 3


PAUSE_EVERY = 4  # during the flood, every fourth window runs with the flooder stopped
PACE_SETTLE_S = 0.1


@dataclass(frozen=True)
class Window:
    rps: float
    p99_ms: float
    cpu_per_request_us: float  # the server's CPU time over the window / valid requests


def valid_load(srv: KmsServer, requests: list[wrk.Prepared]) -> Window:
    """Valid traffic for WINDOW_S as fast as the server answers it (wrk: the client is not
    the limit), every answer a 200."""
    assert srv.proc is not None
    cpu = cpu_seconds(srv.proc.pid)
    result = wrk.run(srv.xks_endpoint, requests, seconds=WINDOW_S,
                     connections=VALID_CONNECTIONS, threads=1, classify=True)
    cpu = cpu_seconds(srv.proc.pid) - cpu
    assert result.answers == {"200": result.requests}, result.answers
    return Window(result.rps, result.p99_ms, cpu / result.requests * 1e6)


def paused(flood: subprocess.Popen[bytes], measure: Callable[[], Window]) -> Window:
    """``measure`` with the flooding process stopped (SIGSTOP: its connections stay open,
    it sends nothing), so that windows of valid traffic alone interleave with the flood's
    and the machine's drift over the flood's minute and a half is in both."""
    os.kill(flood.pid, signal.SIGSTOP)
    try:
        time.sleep(PACE_SETTLE_S)  # the refusals it was waiting for are answered
        return measure()
    finally:
        os.kill(flood.pid, signal.SIGCONT)


def _figures(windows: list[Window]) -> str:
    cpu = statistics.median(w.cpu_per_request_us for w in windows)
    return (" / ".join(f"{w.rps:.0f}" for w in windows)
            + f" req/s (p99 up to {max(w.p99_ms for w in windows):.1f} ms), server CPU "
            f"per valid request median {cpu:.0f} us")


@pytest.mark.slow
def test_bad_signature_flood_against_valid_traffic(served: Served, tmp_path: Path) -> None:
    """10,000 bad signatures from one source against valid traffic from another. Past its
    audit budget the source's refusals are paced (kms/xks/pacing.py) and not logged line
    by line: the flood waits instead of taking the server's CPU.

    Valid load runs in 3 s windows (wrk, 16 connections): two before the flood, as many
    as the flood covers throughout, two after; every fourth window while the flood lasts
    runs with the flooding process stopped, so that the windows alone spread over the same
    minutes as the flood's (one fresh-clone run measured 0.7996 when all six alone windows
    fell in a fast minute before and after it). What the flood costs valid traffic is the
    server's CPU time per valid request, during against alone (medians): the share of the
    server the flood takes, >= 0.8 asserted. Throughput per window is printed too but not
    asserted: on this VM the same load alone moves between 750 and 1,850 req/s from one
    window to the next (CPU steal), which no median over a minute removes."""
    srv = served.srv
    url, headers, data = Signer(srv.xks_endpoint, served.akid, "A" * 43).sign(
        "/keys/k/encrypt", encrypt_body("k", str(uuid.uuid4()), PLAINTEXT, AAD))
    raw = (f"POST {urlsplit(url).path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
           + "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host")
           + f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    valid = presigned(srv, served.akid, served.secret, served.key, 2000)
    alone = [valid_load(srv, valid) for _ in range(2)]
    flood = subprocess.Popen([sys.executable, "-m", "tests.reliability.flood", "127.0.0.1",
                              str(srv.port), str(FLOOD), "32"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, cwd=ROOT)
    assert flood.stdin is not None and flood.stdout is not None
    flood.stdin.write(raw)
    flood.stdin.close()
    time.sleep(1.0)  # past the source's burst: the flood is paced from here on
    during: list[Window] = []
    deadline = time.monotonic() + 300
    for i in itertools.count():  # valid load in windows for as long as the flood lasts
        if flood.poll() is not None:
            break
        assert time.monotonic() < deadline, "the flood did not finish"
        if i % PAUSE_EVERY == PAUSE_EVERY - 1:  # the flood stopped: valid traffic alone
            alone.append(paused(flood, lambda: valid_load(srv, valid)))
            continue
        window = valid_load(srv, valid)
        if flood.poll() is None:  # a window the flood did not cover throughout is dropped
            during.append(window)
    summary = json.loads(flood.stdout.read())
    alone += [valid_load(srv, valid) for _ in range(2)]
    assert during, "the flood ended before one window of valid load"
    ratio = (statistics.median(w.cpu_per_request_us for w in alone)
             / statistics.median(w.cpu_per_request_us for w in during))
    rps_ratio = (statistics.median(w.rps for w in during)
                 / statistics.median(w.rps for w in alone))
    audit = export_and_verify(srv, tmp_path / "export")
    auth_records = [r for r in audit.records if r["op"] == "xks.auth"]
    suppressed = sum(int(r.get("detail", {}).get("suppressed_since_last", 0))
                     for r in auth_records)
    print(f"\nbad-signature flood: {FLOOD} requests over 32 connections in "
          f"{summary['seconds']:.1f} s ({FLOOD / summary['seconds']:.0f}/s) "
          f"answers={summary['statuses']}; valid load in {WINDOW_S} s windows, alone: "
          f"{_figures(alone)}; during the flood: {_figures(during)}; valid work share "
          f"{ratio:.2f} (asserted >= {MIN_RATIO}), throughput medians during/alone "
          f"{rps_ratio:.2f}; auth failure records={len(auth_records)} "
          f"(+{suppressed} counted in them)")
    assert summary["statuses"] == {"401": FLOOD}
    # the server paced the source: no faster than its audit budget (burst and rate) plus
    # the pace, plus the first request of each connection
    paced = (REFUSALS_PER_SECOND + AUTH_FAILURE_AUDIT_RATE) * summary["seconds"]
    assert AUTH_FAILURE_AUDIT_BURST + 32 + paced >= FLOOD
    assert len(auth_records) < FLOOD / 10  # the audit log is not the flood's amplifier
    logged = srv.log().count('"status": 401')
    assert logged < FLOOD / 10, logged  # nor is the service log
    assert ratio >= MIN_RATIO, f"the flood took {1 - ratio:.0%} of the server's work"


@pytest.mark.parametrize(("kind", "source", "status"), [
    ("bad-signature", "127.0.0.3", 401), ("unknown-path", "127.0.0.4", 404)])
def test_flooding_source_is_paced_but_its_valid_requests_are_not(
        served: Served, kind: str, source: str, status: int) -> None:
    """From one source address: refusals (bad signatures, or unknown paths) past the
    source's failure budget are answered at the pace, not faster, and not logged one by
    one, while the same source's valid requests, sent meanwhile, are answered at once."""
    srv = served.srv
    url, headers, data = Signer(srv.xks_endpoint, served.akid, "B" * 43).sign(
        "/keys/k/encrypt", encrypt_body("k", str(uuid.uuid4()), PLAINTEXT, AAD))
    if kind == "unknown-path":
        url = url.replace("/keys/k/encrypt", "/keys/k/wrap")
    logged_before = srv.log().count(f'"status": {status}')
    bad = 600
    refused: list[int] = []
    valid_latencies: list[float] = []
    signer = Signer(srv.xks_endpoint, served.akid, served.secret)
    transport = httpx.HTTPTransport(local_address=source)

    def flood() -> None:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as c:
            for _ in range(bad // 8):
                refused.append(c.post(url, headers=headers, content=data).status_code)

    start = time.monotonic()
    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    with httpx.Client(transport=transport, timeout=5.0) as client:
        wait_until(lambda: len(refused) > 100, 10)  # past the burst: now being paced
        while any(t.is_alive() for t in threads):
            vurl, vheaders, vdata = signer.sign("/keys/k/encrypt", encrypt_body(
                "k", str(uuid.uuid4()), PLAINTEXT, AAD))
            t0 = time.monotonic()
            answer = client.post(vurl, headers=vheaders, content=vdata)
            valid_latencies.append(time.monotonic() - t0)
            assert answer.status_code == 200, answer.text
            time.sleep(0.05)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    floor = (bad - AUTH_FAILURE_AUDIT_BURST - 8) / (REFUSALS_PER_SECOND + AUTH_FAILURE_AUDIT_RATE)
    logged = srv.log().count(f'"status": {status}') - logged_before
    print(f"\npaced source: {bad} x {kind} in {elapsed:.2f} s (pace floor {floor:.2f} s), "
          f"{logged} logged,"
          f" {len(valid_latencies)} valid requests from the same source meanwhile: max "
          f"{max(valid_latencies) * 1000:.1f} ms, median "
          f"{statistics.median(valid_latencies) * 1000:.1f} ms")
    assert refused == [status] * bad
    assert elapsed >= floor * 0.95
    assert logged < bad / 4
    assert len(valid_latencies) >= 5
    assert statistics.median(valid_latencies) < 0.1  # not queued behind the source's refusals


def test_per_store_throttle(served: Served) -> None:
    srv = served.srv
    srv.cli("xks", "stores", "set-throttle", "default", "20")
    try:
        load = Load(srv.xks_endpoint, served.akid, served.secret, served.key,
                    threads=4).start()
        wait_until(lambda: len(load.snapshot()) > 0, 10)
        time.sleep(3)
        answers = load.stop()
        ok = [a for a in answers if a.ok]
        span = max(a.started for a in answers) - min(a.started for a in answers)
        throttled = [a for a in answers if a.status == 429]
        print(f"\nthrottle 20/s: {len(answers)} requests in {span:.1f} s, ok={len(ok)} "
              f"({len(ok) / span:.1f}/s), 429 ThrottlingException={len(throttled)}")
        assert throttled and {a.error for a in throttled} == {"ThrottlingException"}
        assert len(ok) <= 20 * span + 20 + 5  # rate plus one second's burst
        assert {a.status for a in answers} <= {200, 429}
    finally:
        srv.cli("xks", "stores", "set-throttle", "default", "0")


def test_forwarded_client_addresses_are_budgeted_apart(served: Served) -> None:
    """Behind a reverse proxy on the same host (peer 127.0.0.1, uvicorn's default trusted
    proxy), the budget and the pace key on X-Forwarded-For: six clients flooding through
    the proxy each get their own pace, so together they are refused faster than one
    address may be; the same flood without the header is one address, paced as one."""
    srv = served.srv
    url, headers, data = Signer(srv.xks_endpoint, served.akid, "C" * 43).sign(
        "/keys/k/encrypt", encrypt_body("k", str(uuid.uuid4()), PLAINTEXT, AAD))
    per_client, clients = 150, 6
    one_address_floor = ((per_client * clients - AUTH_FAILURE_AUDIT_BURST - clients)
                         / (REFUSALS_PER_SECOND + AUTH_FAILURE_AUDIT_RATE))

    def flood(forwarded: bool) -> float:
        statuses: list[int] = []

        def client(n: int) -> None:
            extra = {"X-Forwarded-For": f"203.0.113.{n + 10}"} if forwarded else {}
            with httpx.Client(timeout=5.0) as c:
                for _ in range(per_client):
                    statuses.append(c.post(url, headers={**headers, **extra},
                                           content=data).status_code)

        start = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [401] * per_client * clients
        return time.monotonic() - start

    forwarded = flood(True)
    direct = flood(False)
    print(f"\n{clients} x {per_client} bad signatures: with X-Forwarded-For (six clients) "
          f"{forwarded:.2f} s, without (one address) {direct:.2f} s; one address's pace "
          f"floor {one_address_floor:.2f} s")
    assert direct >= one_address_floor * 0.95
    assert forwarded < one_address_floor * 0.6
