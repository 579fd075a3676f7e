"""Shared parts of the reliability tests: a signed XKS load driver that records every
answer (status, errorName, latency, kmsRequestId), RSS sampling, and the audit check
(export + offline verify + the set of logged request ids).

The driver signs every request itself (botocore SigV4, ~0.35 ms each) so that every
request carries its own ``kmsRequestId`` and can be looked up in the audit log.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kms.bench import wrk
from kms.client import XksClient
from kms.client.xks_client import XksCiphertext
from tests.server import KmsServer

ACCESS_LOG = {"KMS_ACCESS_LOG": "all"}  # every XKS answer in the service log, with its time


class LoggedAnswer(NamedTuple):
    """One XKS answer as the service logged it (KMS_ACCESS_LOG=all logs the 200s too)."""

    seconds: float  # from the request's arrival to its answer, server side
    status: int
    at: str  # UTC time of the answer
    audit_wait: float  # the part of ``seconds`` spent waiting for its durable audit record

    @property
    def service(self) -> float:
        """The part of the answer that was the service's own (the HSM call, threads, the
        event loop): everything but the audit commit."""
        return self.seconds - self.audit_wait

    def __str__(self) -> str:
        return (f"{self.seconds * 1000:.1f} ms ({self.status} at {self.at[11:23]}, audit "
                f"commit {self.audit_wait * 1000:.1f} ms)")


def xks_answers(srv: KmsServer) -> list[LoggedAnswer]:
    answers = []
    for line in (srv.home / "serve.log").read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("event") == "http_request" and "/kms/xks/v1/" in entry.get("route", ""):
            answers.append(LoggedAnswer(entry["duration_ms"] / 1000, entry["status"],
                                  entry["timestamp"], entry["audit_wait_ms"] / 1000))
    return answers


def within(srv: KmsServer, histogram: str, le: str, labels: str = "") -> tuple[int, int]:
    """(observations within ``le`` seconds, all of them) of a histogram in /metrics, summed
    over its label sets (those whose labels contain ``labels``)."""
    text = httpx.get(srv.url + "/metrics", timeout=10).text
    inside = total = 0
    for found in re.finditer(rf"^{histogram}_(bucket|count)(?:\{{(.*)\}})? (\S+)$", text,
                             re.MULTILINE):
        kind, found_labels, value = found.group(1), found.group(2) or "", found.group(3)
        if labels not in found_labels:
            continue
        if kind == "count":
            total += int(float(value))
        elif f'le="{le}"' in found_labels.split(","):
            inside += int(float(value))
    assert total > 0, f"nothing observed in {histogram}{{{labels}}}"
    return inside, total


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True, slots=True)
class Answer:
    op: str
    rid: str
    started: float  # time.monotonic() at send
    latency: float  # seconds
    status: int  # 0: no HTTP answer (connection error or client timeout)
    error: str | None  # errorName, or "transport:<kind>"

    @property
    def ok(self) -> bool:
        return self.status == 200


class Signer:
    def __init__(self, endpoint: str, akid: str, secret: str) -> None:
        self.base = endpoint.rstrip("/") + "/kms/xks/v1"
        self._auth = SigV4Auth(Credentials(akid, secret), "kms-xks-proxy", "us-east-1")

    def sign(self, path: str, body: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
        url = self.base + path
        data = json.dumps(body, separators=(",", ":")).encode()
        req = AWSRequest(method="POST", url=url, data=data,
                         headers={"Content-Type": "application/json"})
        self._auth.add_auth(req)
        return url, dict(req.headers.items()), data


def metadata(op: str, key: str, rid: str) -> dict[str, str]:
    return {"kmsRequestId": rid, "kmsOperation": op,
            "awsPrincipalArn": "arn:aws:iam::111122223333:role/reliability",
            "kmsKeyArn": f"arn:aws:kms:us-east-1:111122223333:key/{key}"}


def encrypt_body(key: str, rid: str, plaintext: bytes, aad: bytes) -> dict[str, Any]:
    return {"requestMetadata": metadata("Encrypt", key, rid), "plaintext": b64(plaintext),
            "additionalAuthenticatedData": b64(aad), "encryptionAlgorithm": "AES_GCM"}


def decrypt_body(key: str, rid: str, ct: XksCiphertext, aad: bytes) -> dict[str, Any]:
    return {"requestMetadata": metadata("Decrypt", key, rid),
            "ciphertext": b64(ct.ciphertext), "initializationVector": b64(ct.iv),
            "authenticationTag": b64(ct.tag), "ciphertextMetadata": b64(ct.metadata or b""),
            "additionalAuthenticatedData": b64(aad), "encryptionAlgorithm": "AES_GCM"}


AAD = b"reliability-aad"
PLAINTEXT = b"p" * 32


class Load:
    """``threads`` workers sending encrypts (and decrypts of ``seeds``) until stopped,
    optionally paced to ``rate`` requests/s in total. Every answer is kept."""

    def __init__(self, endpoint: str, akid: str, secret: str, key: str, *,
                 threads: int = 4, rate: float | None = None, decrypt_share: float = 0.0,
                 seeds: list[XksCiphertext] | None = None, timeout: float = 2.0) -> None:
        self.signer = Signer(endpoint, akid, secret)
        self.key = key
        self.threads = threads
        self.rate = rate
        self.decrypt_share = decrypt_share
        self.seeds = seeds or []
        self.timeout = timeout
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> Load:
        for n in range(self.threads):
            t = threading.Thread(target=self._work, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)
        return self.answers

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def _work(self, n: int) -> None:
        client = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=1.0))
        interval = self.threads / self.rate if self.rate else 0.0
        next_at = time.monotonic() + (interval * n / self.threads)
        i = 0
        rng = random.Random(n)
        while not self._stop.is_set():
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + interval, time.monotonic() - 1.0)
            i += 1
            rid = str(uuid.uuid4())
            decrypt = bool(self.seeds) and rng.random() < self.decrypt_share
            if decrypt:
                op = "decrypt"
                body = decrypt_body(self.key, rid, self.seeds[i % len(self.seeds)], AAD)
            else:
                op = "encrypt"
                body = encrypt_body(self.key, rid, PLAINTEXT, AAD)
            url, headers, data = self.signer.sign(f"/keys/{self.key}/{op}", body)
            started = time.monotonic()
            try:
                r = client.post(url, content=data, headers=headers)
                status = r.status_code
                try:
                    error = None if status == 200 else r.json().get("errorName")
                except ValueError:
                    error = "non-json"
            except httpx.TimeoutException:
                status, error = 0, "transport:timeout"
            except httpx.HTTPError as exc:
                status, error = 0, f"transport:{type(exc).__name__}"
            answer = Answer(op, rid, started, time.monotonic() - started, status, error)
            with self._lock:
                self.answers.append(answer)
        client.close()


def seeds(srv: KmsServer, akid: str, secret: str, key: str, n: int = 16) -> list[XksCiphertext]:
    client = XksClient(srv.xks_endpoint, akid, secret)
    try:
        return [client.encrypt(key, PLAINTEXT, AAD) for _ in range(n)]
    finally:
        client.close()


def kinds(answers: Iterable[Answer]) -> Counter[str]:
    return Counter("ok" if a.ok else f"{a.status} {a.error}" for a in answers)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (work done, whatever the VM's speed)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until ``predicate()`` held; raises on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


@dataclass
class AuditCheck:
    report: dict[str, Any]
    ok_request_ids: set[str] = field(default_factory=set)
    records: list[dict[str, Any]] = field(default_factory=list)


def export_and_verify(srv: KmsServer, out: Path) -> AuditCheck:
    """``kms audit export`` then ``kms audit verify --json`` (an auditor's view)."""
    srv.cli("audit", "export", str(out))
    result = srv.cli("audit", "verify", str(out), "--json", check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["status"] == "valid", report
    check = AuditCheck(report)
    for path in sorted((out / "records").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            rec = json.loads(line)
            check.records.append(rec)
            if rec["outcome"] == "ok" and rec["op"] in ("xks.encrypt", "xks.decrypt"):
                check.ok_request_ids.add(rec["request"]["kmsRequestId"])
    seqs = [r["seq"] for r in check.records]
    assert seqs == list(range(len(seqs))), "gap or fork in the exported sequence"
    return check


def token_dir(srv: KmsServer) -> Path:
    dirs = [d for d in (srv.home / "softhsm" / "tokens").iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def post_raw(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, **kwargs)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


ENV_SOAK = os.environ.get("KMS_SOAK") == "1"


def presigned(srv: KmsServer, akid: str, secret: str, key: str, n: int,
              cts: list[XksCiphertext] | None = None) -> list[wrk.Prepared]:
    """n requests for wrk, encrypts and decrypts alternating, each with its own
    kmsRequestId (valid for the SigV4 window: replay them for minutes, not longer). The
    decrypts are of ``cts`` (made now if not given: the key must then be enabled)."""
    signer = Signer(srv.xks_endpoint, akid, secret)
    if cts is None:
        cts = seeds(srv, akid, secret, key)
    out = []
    for i in range(n):
        rid = str(uuid.uuid4())
        if i % 2:
            body = decrypt_body(key, rid, cts[i % len(cts)], AAD)
            url, headers, data = signer.sign(f"/keys/{key}/decrypt", body)
        else:
            body = encrypt_body(key, rid, PLAINTEXT, AAD)
            url, headers, data = signer.sign(f"/keys/{key}/encrypt", body)
        out.append(wrk.Prepared("POST", urlsplit(url).path, headers, data))
    return out
