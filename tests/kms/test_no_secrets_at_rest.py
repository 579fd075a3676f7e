"""Planted secrets (plaintexts, AAD, the PIN, an XKS secret) never reach the audit log, its
export, the database file or the server's log."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from kms.client import XksClient
from tests.server import KmsServer


def all_bytes(paths: list[Path]) -> bytes:
    return b"".join(p.read_bytes() for p in paths if p.is_file())


def test_planted_secrets_are_nowhere(tmp_path: Path) -> None:
    srv = KmsServer()
    try:
        srv.cli("keys", "create", "k")
        akid, secret = srv.add_credential()
        srv.start()
        plaintext = f"PLAINTEXT-{uuid.uuid4().hex}".encode()
        aad = f"AAD-{uuid.uuid4().hex}".encode()
        client = XksClient(srv.xks_endpoint, akid, secret)
        ct = client.encrypt("k", plaintext, aad, integrity=True)
        assert client.decrypt("k", ct, aad) == plaintext
        client.close()
        srv.cli("audit", "export", str(tmp_path / "export"))
    finally:
        srv.stop()
    pin = (srv.home / "pkcs11.pin").read_text().strip().encode()
    planted = {
        "plaintext": plaintext,
        "plaintext b64": base64.b64encode(plaintext),
        "aad": aad,
        "aad b64": base64.b64encode(aad),
        "pin": pin,
        "xks secret": secret.encode(),
    }
    places = {
        "database": all_bytes([srv.home / "kms.db", srv.home / "kms.db-wal"]),
        "export": all_bytes(list((tmp_path / "export").rglob("*"))),
        "server log": all_bytes([srv.home / "serve.log"]),
    }
    assert len(places["export"]) > 1000 and len(places["database"]) > 1000
    found = [(name, where) for name, value in planted.items()
             for where, data in places.items() if value in data]
    assert found == []
