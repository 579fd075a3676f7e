"""Unit tests of the gateway's pure parts: master key, virtual keys, error mapping, the
provider-key TTL, the stream assembler. No KMS needed."""

from __future__ import annotations

import json
import os
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

import kms.errors as kms_errors
from gateway.db import create_schema, make_engine
from gateway.errors import (
    AuthenticationError,
    CustomerKeyRevokedError,
    CustomerKeyUnreachableError,
    StoredDataUnreadableError,
)
from gateway.master_key import MasterKey, MasterKeyError, create_key_file
from gateway.provider_keys import ProviderKeyVault
from gateway.settings import Settings
from gateway.stream_assembler import StreamAssembler
from gateway.tenant_keys import TenantKeys
from gateway.tenants import TenantStore
from gateway.virtual_keys import VirtualKeyStore


@pytest.fixture()
def master() -> MasterKey:
    return MasterKey(os.urandom(32))


@pytest.fixture()
def engine(tmp_path: Path) -> Engine:
    e = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    create_schema(e)
    return e


def test_key_file_is_0600_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "home" / "master.key"
    assert create_key_file(path) and not create_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert "redacted" in repr(MasterKey.load(path))
    with pytest.raises(TypeError):
        pickle.dumps(MasterKey.load(path))
    path.chmod(0o644)
    with pytest.raises(MasterKeyError):
        MasterKey.load(path)


def test_sealed_credential_is_bound_to_tenant_and_access_key(master: MasterKey) -> None:
    sealed = master.seal_credential("a", "AKID1", "s3cret")
    assert b"s3cret" not in sealed
    assert master.open_credential("a", "AKID1", sealed) == "s3cret"
    for tenant, akid in (("b", "AKID1"), ("a", "AKID2")):
        with pytest.raises(MasterKeyError):
            master.open_credential(tenant, akid, sealed)
    with pytest.raises(MasterKeyError):
        MasterKey(os.urandom(32)).open_credential("a", "AKID1", sealed)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(MasterKeyError):
        master.open_credential("a", "AKID1", bytes(flipped))


def _tenant(engine: Engine, master: MasterKey) -> TenantStore:
    store = TenantStore(engine, master)
    store.create("acme", "http://127.0.0.1:1/xks", "k1", "AKID", "secret")
    return store


def test_virtual_keys_hashed_expiring_revocable(engine: Engine, master: MasterKey) -> None:
    _tenant(engine, master)
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = VirtualKeyStore(engine, master, clock=lambda: now[0])
    key, secret = store.create("acme", env="dev", models=["gpt-4o"], rpm=5,
                               expires_in_days=1)
    with engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT key_hash FROM virtual_keys").scalar_one()
    assert secret.encode() not in raw and raw == master.hash_virtual_key(secret)
    assert store.authenticate(secret).id == key.id
    assert key.allows("gpt-4o") and not key.allows("o3")
    for bad in (None, "", secret + "x", secret[:-1], "gwk-" + "a" * 200):
        with pytest.raises(AuthenticationError):
            store.authenticate(bad)
    now[0] += timedelta(days=1)
    with pytest.raises(AuthenticationError):
        store.authenticate(secret)
    other, other_secret = store.create("acme")
    store.revoke(other.id)
    with pytest.raises(AuthenticationError):
        store.authenticate(other_secret)


def test_key_service_errors_map_to_403_and_503_and_purge(engine: Engine,
                                                        master: MasterKey) -> None:
    keys = TenantKeys(_tenant(engine, master), Settings.from_env({}))
    purged: list[str] = []
    keys.on_refusal(purged.append)

    def fail(exc: Exception) -> None:
        raise exc

    for exc, expected in ((kms_errors.InvalidStateError("disabled"), CustomerKeyRevokedError),
                          (kms_errors.KeyNotFoundError("gone"), CustomerKeyRevokedError),
                          (kms_errors.AuthenticationFailedError("no"), CustomerKeyRevokedError),
                          (kms_errors.DependencyTimeoutError("down"),
                           CustomerKeyUnreachableError),
                          (kms_errors.InvalidCiphertextError("bad"),
                           StoredDataUnreadableError)):
        with pytest.raises(expected) as err:
            keys.call("acme", lambda e=exc: fail(e))  # type: ignore[misc]
        assert err.value.status in (403, 503, 500)
    assert purged == ["acme"] * 4


def test_decrypted_provider_keys_live_at_most_the_ttl(engine: Engine, master: MasterKey) -> None:
    class FakeKeys:
        def __init__(self) -> None:
            self.decrypts = 0
            self.callbacks: list[object] = []

        def on_refusal(self, cb: object) -> None:
            self.callbacks.append(cb)

        def encrypt(self, tenant: str, plain: bytes, ctx: dict[str, str]) -> bytes:
            return json.dumps([ctx, plain.decode()]).encode()

        def decrypt(self, tenant: str, blob: bytes, ctx: dict[str, str]) -> bytes:
            self.decrypts += 1
            stored_ctx, plain = json.loads(blob)
            assert stored_ctx == ctx
            return str(plain).encode()

    _tenant(engine, master)
    now = [100.0]
    fake = FakeKeys()
    vault = ProviderKeyVault(engine, fake, ttl_seconds=2.0,  # type: ignore[arg-type]
                             clock=lambda: now[0])
    vault.add("acme", "openai", "http://up/v1", "sk-one")
    vault.add("acme", "openai", "http://up/v1", "sk-two")
    creds = vault.credentials("acme", "openai")
    assert [c.api_key for c in creds] == ["sk-one", "sk-two"] and "sk-" not in repr(creds)
    vault.credentials("acme", "openai")
    assert fake.decrypts == 2
    now[0] += 2.0
    vault.credentials("acme", "openai")
    assert fake.decrypts == 4
    vault.purge("acme")
    vault.credentials("acme", "openai")
    assert fake.decrypts == 6


def test_stream_assembler_reassembles_split_chunks() -> None:
    events = [{"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": t}}]}
              for t in ("Hel", "lo", " world")]
    events.append({"id": "c1", "choices": [], "usage": {"total_tokens": 9}})
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    raw += b"data: [DONE]\n\n"
    a = StreamAssembler()
    for i in range(0, len(raw), 7):
        a.feed(raw[i:i + 7])
    out = a.completion()
    assert out["choices"][0]["message"]["content"] == "Hello world"
    assert out["usage"] == {"total_tokens": 9} and out["stream_complete"]
    capped = StreamAssembler(max_bytes=4)
    capped.feed(raw)
    assert capped.truncated and len("".join(capped.content)) <= 4


def test_retention_deletes_only_old_records_of_the_tenant(engine: Engine,
                                                          master: MasterKey) -> None:
    from gateway import db
    from gateway.request_logs import RequestLog

    _tenant(engine, master)
    old = datetime.now(UTC) - timedelta(days=10)
    with engine.begin() as conn:
        for rid, when in (("req_old", old), ("req_new", datetime.now(UTC))):
            conn.execute(db.request_logs.insert().values(
                id=rid, tenant_id="acme", virtual_key_id="vk_1", created_at=when,
                prompt_blob=b"x"))
    log = RequestLog(engine, None)  # type: ignore[arg-type]
    assert log.purge_older_than("acme", 7) == 1
    assert [r.id for r in log.recent("acme")] == ["req_new"]
