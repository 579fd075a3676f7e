"""XKS encrypt/decrypt throughput of a running ``kms serve``, next to the echo baseline."""

from __future__ import annotations

import base64
import json
import os
import statistics
import uuid
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kms.bench import wrk
from kms.bench.bare_xks import BareProcess
from kms.bench.processes import EchoProcess, KmsProcess
from kms.client import XksClient

KEY = "bench-key"
PRESIGNED = 2000  # distinct signed requests replayed in a loop (all within the 5 min window)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def presign(url: str, akid: str, secret: str,
            bodies: list[dict[str, object]]) -> list[wrk.Prepared]:
    signer = SigV4Auth(Credentials(akid, secret), "kms-xks-proxy", "us-east-1")
    out = []
    for body in bodies:
        data = json.dumps(body, separators=(",", ":")).encode()
        req = AWSRequest(method="POST", url=url, data=data,
                         headers={"Content-Type": "application/json"})
        signer.add_auth(req)
        headers = {k: v for k, v in req.headers.items()}
        out.append(wrk.Prepared("POST", urlsplit(url).path, headers, data))
    return out


def _md(op: str, key: str = KEY) -> dict[str, str]:
    return {"kmsRequestId": str(uuid.uuid4()), "kmsOperation": op,
            "awsPrincipalArn": "arn:aws:iam::111122223333:role/bench",
            "kmsKeyArn": f"arn:aws:kms:us-east-1:111122223333:key/{key}"}


def encrypt_body(aad: bytes, key: str = KEY) -> dict[str, object]:
    """An XKS Encrypt body: a fresh request id, a random 32-byte plaintext, ``aad``."""
    return {"requestMetadata": _md("Encrypt", key), "plaintext": _b64(os.urandom(32)),
            "additionalAuthenticatedData": _b64(aad), "encryptionAlgorithm": "AES_GCM"}


def echo_requests(body: dict[str, object]) -> list[wrk.Prepared]:
    """The echo baseline's load: the same body as an XKS request, unsigned."""
    return [wrk.Prepared("POST", "/echo", {"Content-Type": "application/json"},
                         json.dumps(body).encode())]


def _merged(results: list[wrk.LoadResult]) -> dict[str, float]:
    """One target's rounds as one run: requests over the rounds' time, the percentiles of
    all their latencies together (wrk.merged_percentile_ms), errors summed."""
    seconds = sum(r.requests / r.rps for r in results if r.rps > 0)
    requests = sum(r.requests for r in results)
    return {"rps": round(requests / seconds, 1) if seconds else 0.0,
            "p50_ms": round(wrk.merged_percentile_ms(results, 0.50), 3),
            "p99_ms": round(wrk.merged_percentile_ms(results, 0.99), 3),
            "requests": requests, "errors": sum(r.errors for r in results)}


def _ratio(a: list[wrk.LoadResult], b: list[wrk.LoadResult]) -> float:
    """The median of the rounds' ratios: each round's two runs were made minutes closer
    together than two whole runs would be, on a machine whose speed moves that fast."""
    return round(statistics.median(x.rps / y.rps for x, y in zip(a, b, strict=True)), 3)


def run(seconds: int) -> dict[str, object]:
    """The encrypts of ``kms serve`` (as configured by default, and with the HSM calls on
    the event loop), the echo baseline and the bare reference take turns in rounds
    (``seconds`` of wrk each in all, the order reversed every other round); the ratios
    are the medians of the rounds' ratios. The decrypts run once, before."""
    servers: list[KmsProcess] = []
    echo = bare = None
    try:
        # the default, whatever the environment says; and the HSM calls on the event loop
        kms = KmsProcess([KEY], env={"KMS_HSM_WORKER": "process"})
        servers.append(kms)
        kms.start()
        inline = KmsProcess([KEY], env={"KMS_HSM_WORKER": "off"})
        servers.append(inline)
        inline.start()
        base = f"{kms.url}/xks/kms/xks/v1/keys/{KEY}"
        aad = os.urandom(32)
        enc_bodies = [encrypt_body(aad) for _ in range(PRESIGNED)]
        client = XksClient(f"{kms.url}/xks", kms.akid, kms.secret)
        samples = [client.encrypt(KEY, os.urandom(32), aad) for _ in range(20)]
        client.close()
        dec_bodies: list[dict[str, object]] = []
        for i in range(PRESIGNED):
            ct = samples[i % len(samples)]
            dec_bodies.append({
                "requestMetadata": _md("Decrypt"), "ciphertext": _b64(ct.ciphertext),
                "initializationVector": _b64(ct.iv), "authenticationTag": _b64(ct.tag),
                "ciphertextMetadata": _b64(ct.metadata or b""),
                "additionalAuthenticatedData": _b64(aad), "encryptionAlgorithm": "AES_GCM"})
        decrypt = wrk.run(base + "/decrypt",
                          presign(base + "/decrypt", kms.akid, kms.secret, dec_bodies),
                          seconds=seconds)
        echo = EchoProcess()
        # The reference: the mandatory work alone (kms/bench/bare_xks.py)
        bare = BareProcess(kms.akid, kms.secret)
        bare_url = f"{bare.url}/kms/xks/v1/keys/{KEY}/encrypt"
        inline_url = f"{inline.url}/xks/kms/xks/v1/keys/{KEY}/encrypt"
        targets = {
            "xks": (base + "/encrypt", presign(base + "/encrypt", kms.akid, kms.secret,
                                               enc_bodies)),
            "inline": (inline_url, presign(inline_url, inline.akid, inline.secret,
                                           enc_bodies)),
            "echo": (echo.url + "/echo", echo_requests(enc_bodies[0])),
            "bare": (bare_url, presign(bare_url, kms.akid, kms.secret, enc_bodies)),
        }
        for url, requests in targets.values():
            wrk.run(url, requests[:20], seconds=1)  # each as warm as the others
        rounds = max(3, seconds // 2)
        each = max(1, round(seconds / rounds))
        runs: dict[str, list[wrk.LoadResult]] = {name: [] for name in targets}
        for i in range(rounds):
            for name in (list(targets) if i % 2 == 0 else list(reversed(targets))):
                url, requests = targets[name]
                runs[name].append(wrk.run(url, requests, seconds=each, quantiles=True))
    finally:
        for server in servers:
            server.stop()
        if echo is not None:
            echo.stop()
        if bare is not None:
            bare.stop()
    return {"xks_encrypt": _merged(runs["xks"]), "xks_decrypt": decrypt.to_json(),
            "echo": _merged(runs["echo"]),
            "xks_vs_echo": _ratio(runs["xks"], runs["echo"]),
            "xks_encrypt_hsm_inline": _merged(runs["inline"]),
            "xks_hsm_inline_vs_echo": _ratio(runs["inline"], runs["echo"]),
            "xks_bare": _merged(runs["bare"]),
            "xks_bare_vs_echo": _ratio(runs["bare"], runs["echo"]),
            "xks_vs_bare": _ratio(runs["xks"], runs["bare"]),
            "xks_rounds": rounds}
