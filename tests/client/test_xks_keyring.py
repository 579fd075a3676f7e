"""kms.client and the XKS keyring against a real ``kms serve`` (SigV4 by botocore)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kms.client import XksClient, XksKeyring
from kms.envelope import DataKeyCache, EnvelopeEncryptor
from kms.errors import (
    AuthenticationFailedError,
    DependencyTimeoutError,
    InvalidCiphertextError,
    InvalidStateError,
    KeyNotFoundError,
)
from tests.server import KmsServer, free_port


@pytest.fixture(scope="module")
def server() -> Iterator[KmsServer]:
    srv = KmsServer(uri_prefix="tenants/acme")
    srv.cli("keys", "create", "tenant-key")
    srv.cli("keys", "create", "other-key")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture()
def client(server: KmsServer) -> Iterator[XksClient]:
    akid, secret = server.add_credential()
    c = XksClient(server.xks_endpoint, akid, secret)
    yield c
    c.close()


def test_client_round_trip_and_typed_errors(client: XksClient, server: KmsServer) -> None:
    assert client.health()["ekmFleetDetails"][0]["healthStatus"] == "ACTIVE"
    assert client.metadata("tenant-key")["keyStatus"] == "ENABLED"
    ct = client.encrypt("tenant-key", b"data key bytes", b"ctx", integrity=True)
    assert ct.integrity_value
    assert client.decrypt("tenant-key", ct, b"ctx") == b"data key bytes"
    with pytest.raises(InvalidCiphertextError):
        client.decrypt("tenant-key", ct, b"other ctx")
    with pytest.raises(KeyNotFoundError):
        client.encrypt("no-such-key", b"x")
    bad = XksClient(server.xks_endpoint, "A" * 20, "x" * 44)
    with pytest.raises(AuthenticationFailedError):
        bad.health()
    down = XksClient(f"http://127.0.0.1:{free_port()}/xks", "A" * 20, "x" * 44, timeout=0.5)
    with pytest.raises(DependencyTimeoutError):
        down.health()


def test_envelope_over_xks_and_revocation(client: XksClient, server: KmsServer) -> None:
    keyring = XksKeyring(client)
    enc = EnvelopeEncryptor(keyring, "tenant-key")
    ctx = {"tenant": "acme", "kind": "prompt"}
    blob = enc.encrypt(b"the prompt", ctx)
    assert enc.decrypt(blob, ctx) == b"the prompt"
    with pytest.raises(InvalidCiphertextError):
        enc.decrypt(blob, {"tenant": "evil", "kind": "prompt"})
    with pytest.raises(InvalidCiphertextError):
        EnvelopeEncryptor(keyring, "other-key").decrypt(blob, ctx)
    server.cli("keys", "revoke", "tenant-key", "--reason", "test")
    try:
        with pytest.raises(InvalidStateError):
            enc.decrypt(blob, ctx)
        with pytest.raises(InvalidStateError):
            enc.encrypt(b"new", ctx)
    finally:
        server.cli("keys", "enable", "tenant-key")
    assert enc.decrypt(blob, ctx) == b"the prompt"


def test_cached_data_keys_purge_on_revoke(client: XksClient) -> None:
    cache = DataKeyCache(max_age_seconds=60)
    enc = EnvelopeEncryptor(XksKeyring(client), "tenant-key", cache=cache)
    ctx = {"tenant": "acme"}
    blobs = [enc.encrypt(b"m%d" % i, ctx) for i in range(5)]
    assert [enc.decrypt(b, ctx) for b in blobs] == [b"m%d" % i for i in range(5)]
    assert cache.purge("tenant-key") >= 1
