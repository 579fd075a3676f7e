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
from pathlib import Path

import httpx
import pytest

from kms.bench import bare_xks
from kms.bench.bare_xks import BareProcess
from kms.bench.processes import ModuleServer
from kms.bench.xks_load import encrypt_body, presign

AKID = "BAREAKIDBAREAKID2345"
SECRET = "bare-secret-" + "x" * 32

# Run with the server's environment (its token): this process's SoftHSM has its own.
_DECRYPT = """
import base64, os, sys
from hsm import HsmError, Pin
from hsm.pkcs11_hsm import Pkcs11Hsm, find_softhsm_module
from kms.bench.bare_xks import KEY_LABEL, TOKEN_LABEL
iv, ct, tag, aad = (base64.b64decode(a) for a in sys.argv[1:5])
hsm = Pkcs11Hsm(find_softhsm_module(), TOKEN_LABEL, Pin(os.environ["BARE_XKS_PIN"]))
try:
    print(base64.b64encode(hsm.decrypt(KEY_LABEL, iv, ct, tag, aad)).decode())
except HsmError:
    print("refused")
"""


def _records(bare: BareProcess) -> int:
    with sqlite3.connect(bare.dir / "audit.db") as conn:
        return int(conn.execute("SELECT count(*) FROM audit_records").fetchone()[0])


def _decrypt(bare: BareProcess, iv: bytes, ct: bytes, tag: bytes, aad: bytes) -> str:
    args = [base64.b64encode(x).decode() for x in (iv, ct, tag, aad)]
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
        iv, ct, tag = (base64.b64decode(body[k]) for k in (
            "initializationVector", "ciphertext", "authenticationTag"))
        assert _decrypt(bare, iv, ct, tag, aad) == base64.b64encode(plaintext).decode()
        assert _decrypt(bare, iv, ct, tag, os.urandom(32)) == "refused"
    finally:
        bare.stop()


def test_a_server_that_does_not_start_is_reported_and_cleaned_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError, match="server exited"):
        ModuleServer("kms.bench.no_such_module", "/")
    # The bare reference's token and database directory goes too.
    workdir = tmp_path / "bare"
    workdir.mkdir()
    monkeypatch.setattr(bare_xks.tempfile, "mkdtemp", lambda prefix: str(workdir))

    def no_server(self: ModuleServer, module: str, ready_path: str,
                  env: dict[str, str] | None = None) -> None:
        raise RuntimeError("server exited with 1")

    monkeypatch.setattr(ModuleServer, "__init__", no_server)
    with pytest.raises(RuntimeError, match="server exited"):
        BareProcess(AKID, SECRET)
    assert not workdir.exists()
