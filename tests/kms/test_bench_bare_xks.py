"""The bench's bare XKS reference (kms/bench/bare_xks.py) does the work it claims to do:
it verifies the signature (a wrong secret, another access key id or no signature is
refused), encrypts under the AAD in SoftHSM (the answer decrypts with the token's key and
that AAD only) and makes one durable audit record per answered request."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys

import httpx

from kms.bench.bare_xks import BareProcess
from kms.bench.xks_load import encrypt_body, presign

AKID = "BAREAKIDBAREAKID2345"
SECRET = "bare-secret-" + "x" * 32

# Run with the server's environment (its token): this process's SoftHSM has its own.
_DECRYPT = """
import base64, os, sys, pkcs11
from pkcs11 import Attribute, Mechanism, ObjectClass
from hsm.pkcs11_hsm import find_softhsm_module
from kms.bench.bare_xks import KEY_LABEL, TOKEN_LABEL
iv, sealed, aad = (base64.b64decode(a) for a in sys.argv[1:4])
token = pkcs11.lib(find_softhsm_module()).get_token(token_label=TOKEN_LABEL)
with token.open(user_pin=os.environ["BARE_XKS_PIN"]) as s:
    key = s.get_key(object_class=ObjectClass.SECRET_KEY, label=KEY_LABEL)
    try:
        out = key.decrypt(sealed, mechanism=Mechanism.AES_GCM,
                          mechanism_param=pkcs11.GCMParams(iv, aad, 128))
    except pkcs11.PKCS11Error:
        print("refused")
    else:
        print(base64.b64encode(out).decode())
"""


def _records(bare: BareProcess) -> int:
    with sqlite3.connect(bare.dir / "audit.db") as conn:
        return int(conn.execute("SELECT count(*) FROM audit_records").fetchone()[0])


def _decrypt(bare: BareProcess, iv: bytes, sealed: bytes, aad: bytes) -> str:
    args = [base64.b64encode(x).decode() for x in (iv, sealed, aad)]
    done = subprocess.run([sys.executable, "-c", _DECRYPT, *args], env=bare.env,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_bare_reference_verifies_encrypts_and_audits() -> None:
    bare = BareProcess(AKID, SECRET)
    try:
        url = f"{bare.url}/kms/xks/v1/keys/k/encrypt"
        aad, plaintext = os.urandom(32), os.urandom(32)
        doc = encrypt_body(aad)
        doc["plaintext"] = base64.b64encode(plaintext).decode()
        good = presign(url, AKID, SECRET, [doc])[0]
        answer = httpx.post(url, content=good.body, headers=good.headers)
        assert answer.status_code == 200
        assert _records(bare) == 1
        refused = [presign(url, AKID, "wrong-secret", [doc])[0],
                   presign(url, "OTHERAKIDOTHERAKID23", SECRET, [doc])[0]]
        for req in refused:
            assert httpx.post(url, content=req.body, headers=req.headers).status_code == 403
        assert httpx.post(url, content=good.body).status_code == 403  # unsigned
        assert _records(bare) == 1  # refusals make no record (and no HSM call)

        body = json.loads(answer.text)
        iv = base64.b64decode(body["initializationVector"])
        sealed = base64.b64decode(body["ciphertext"]) + base64.b64decode(
            body["authenticationTag"])
        assert _decrypt(bare, iv, sealed, aad) == base64.b64encode(plaintext).decode()
        assert _decrypt(bare, iv, sealed, os.urandom(32)) == "refused"
    finally:
        bare.stop()
