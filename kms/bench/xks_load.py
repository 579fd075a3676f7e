"""XKS encrypt/decrypt throughput of a running ``kms serve``, next to the echo baseline."""

from __future__ import annotations

import base64
import json
import os
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


def run(seconds: int) -> dict[str, object]:
    kms = KmsProcess([KEY], env={"KMS_HSM_WORKER": "process"})  # the default, whatever the
    # environment says
    echo = bare = None
    try:
        kms.start()
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
        encrypt = wrk.run(base + "/encrypt",
                          presign(base + "/encrypt", kms.akid, kms.secret, enc_bodies),
                          seconds=seconds)
        decrypt = wrk.run(base + "/decrypt",
                          presign(base + "/decrypt", kms.akid, kms.secret, dec_bodies),
                          seconds=seconds)
        kms.stop()
        # The same encrypts with the HSM calls on the event loop (KMS_HSM_WORKER=off; the
        # default makes them in the HSM worker process, kms/hsmproc/)
        kms = KmsProcess([KEY], env={"KMS_HSM_WORKER": "off"})
        kms.start()
        base = f"{kms.url}/xks/kms/xks/v1/keys/{KEY}"
        client = XksClient(f"{kms.url}/xks", kms.akid, kms.secret)
        for _ in range(20):  # as warm as the first server was
            client.encrypt(KEY, os.urandom(32), aad)
        client.close()
        inline = wrk.run(base + "/encrypt",
                         presign(base + "/encrypt", kms.akid, kms.secret, enc_bodies),
                         seconds=seconds)
        echo = EchoProcess()
        echo_res = wrk.run(echo.url + "/echo", echo_requests(enc_bodies[0]), seconds=seconds)
        echo.stop()
        echo = None
        # The reference: the mandatory work alone (kms/bench/bare_xks.py), right after echo
        bare = BareProcess(kms.akid, kms.secret)
        bare_url = f"{bare.url}/kms/xks/v1/keys/{KEY}/encrypt"
        bare_requests = presign(bare_url, kms.akid, kms.secret, enc_bodies)
        wrk.run(bare_url, bare_requests[:20], seconds=1)  # as warm as the others
        bare_res = wrk.run(bare_url, bare_requests, seconds=seconds)
    finally:
        kms.stop()
        if echo is not None:
            echo.stop()
        if bare is not None:
            bare.stop()
    return {"xks_encrypt": encrypt.to_json(), "xks_decrypt": decrypt.to_json(),
            "echo": echo_res.to_json(),
            "xks_vs_echo": round(encrypt.rps / echo_res.rps, 3),
            "xks_encrypt_hsm_inline": inline.to_json(),
            "xks_hsm_inline_vs_echo": round(inline.rps / echo_res.rps, 3),
            "xks_bare": bare_res.to_json(),
            "xks_bare_vs_echo": round(bare_res.rps / echo_res.rps, 3),
            "xks_vs_bare": round(encrypt.rps / bare_res.rps, 3)}
