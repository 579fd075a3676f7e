"""The key service on a real SoftHSM token, against SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from kms.audit.event import cli_actor
from kms.db import schema
from kms.errors import (
    ConflictError,
    InvalidCiphertextError,
    InvalidKeyUsageError,
    InvalidStateError,
    KeyNotFoundError,
    ValidationError,
)
from kms.keys.model import TRANSITIONS, InvalidTransitionError, KeyState, KeyUsage, Transition
from kms.runtime import Runtime
from tests.kms.conftest import FakeClock, RuntimeFactory

BOTH = frozenset({KeyUsage.ENCRYPT, KeyUsage.DECRYPT})
ACTOR = cli_actor("test")


def audit_ops(rt: Runtime) -> list[str]:
    import json

    return [json.loads(b)["op"] for b in rt.audit.records()]


def test_encrypt_decrypt_binds_key_version_and_aad(make_runtime: RuntimeFactory,
                                                   db_url: str) -> None:
    rt = make_runtime(db_url)
    rt.keys.create_key("a", BOTH, ACTOR)
    rt.keys.create_key("b", BOTH, ACTOR)
    enc = rt.keys.encrypt("a", b"secret", b"ctx")
    assert enc.version == 1
    assert rt.keys.decrypt("a", 1, enc.ciphertext, b"ctx") == b"secret"
    with pytest.raises(InvalidCiphertextError):
        rt.keys.decrypt("a", 1, enc.ciphertext, b"other")
    with pytest.raises(InvalidCiphertextError):
        rt.keys.decrypt("b", 1, enc.ciphertext, b"ctx")  # another key
    with pytest.raises(InvalidCiphertextError):
        rt.keys.decrypt("a", 2, enc.ciphertext, b"ctx")  # a version that does not exist
    with pytest.raises(KeyNotFoundError):
        rt.keys.encrypt("nope", b"x", b"")
    assert audit_ops(rt) == ["key.create", "key.create"]


def test_usage_sets_including_the_empty_set(make_runtime: RuntimeFactory,
                                            sqlite_url: str) -> None:
    rt = make_runtime(sqlite_url)
    rt.keys.create_key("enc", frozenset({KeyUsage.ENCRYPT}), ACTOR)
    rt.keys.create_key("dec", frozenset({KeyUsage.DECRYPT}), ACTOR)
    rt.keys.create_key("none", frozenset(), ACTOR)
    enc = rt.keys.encrypt("enc", b"x", b"")
    with pytest.raises(InvalidKeyUsageError):
        rt.keys.decrypt("enc", 1, enc.ciphertext, b"")
    with pytest.raises(InvalidKeyUsageError):
        rt.keys.encrypt("dec", b"x", b"")
    for call in (lambda: rt.keys.encrypt("none", b"x", b""),
                 lambda: rt.keys.decrypt("none", 1, enc.ciphertext, b"")):
        with pytest.raises(InvalidKeyUsageError):
            call()
    assert rt.registry.get_key("none").usage == frozenset()


def test_every_transition_allowed_and_forbidden(make_runtime: RuntimeFactory,
                                                db_url: str) -> None:
    clock = FakeClock()
    rt = make_runtime(db_url, clock=clock)

    def key_in(state: KeyState, name: str) -> str:
        rt.keys.create_key(name, BOTH, ACTOR)
        if state is KeyState.DISABLED:
            rt.keys.revoke(name, "test", ACTOR)
        elif state is KeyState.PENDING_DELETION:
            rt.keys.schedule_deletion(name, 7, ACTOR)
        elif state is KeyState.DESTROYED:
            rt.keys.revoke(name, "test", ACTOR)
            rt.keys.destroy(name, ACTOR)
        assert rt.registry.get_key(name).state is state
        return name

    def apply(t: Transition, name: str) -> None:
        calls = {
            Transition.REVOKE: lambda: rt.keys.revoke(name, "r", ACTOR),
            Transition.ENABLE: lambda: rt.keys.enable(name, ACTOR),
            Transition.SCHEDULE_DELETION: lambda: rt.keys.schedule_deletion(name, 7, ACTOR),
            Transition.CANCEL_DELETION: lambda: rt.keys.cancel_deletion(name, ACTOR),
            Transition.DESTROY: lambda: rt.keys.destroy(name, ACTOR),
            Transition.ROTATE: lambda: rt.keys.rotate(name, ACTOR),
        }
        calls[t]()

    n = 0
    for state in KeyState:
        for t in Transition:
            n += 1
            name = key_in(state, f"k{n}")
            target = TRANSITIONS.get((t, state))
            if target is None:
                with pytest.raises(InvalidTransitionError) as info:
                    apply(t, name)
                assert state.value in info.value.message
                assert rt.registry.get_key(name).state is state
            else:
                apply(t, name)
                assert rt.registry.get_key(name).state is target, (t, state)
    assert n == len(KeyState) * len(Transition)


def test_deletion_waiting_period_limits(make_runtime: RuntimeFactory, sqlite_url: str) -> None:
    clock = FakeClock()
    rt = make_runtime(sqlite_url, clock=clock)
    rt.keys.create_key("k", BOTH, ACTOR)
    for days in (0, 6, 31):
        with pytest.raises(ValidationError):
            rt.keys.schedule_deletion("k", days, ACTOR)
    key = rt.keys.schedule_deletion("k", 7, ACTOR)
    assert key.deletion_due == "2026-12-03T12:00:00.000000Z"
    with pytest.raises(InvalidStateError):
        rt.keys.encrypt("k", b"x", b"")
    assert rt.keys.sweep_due_deletions(ACTOR) == []
    clock.advance(days=7)
    assert rt.keys.sweep_due_deletions(ACTOR) == ["k"]
    key = rt.registry.get_key("k")
    assert key.state is KeyState.DESTROYED
    assert not rt.hsm.has_key(key.versions[0].hsm_label)


def test_rotation_and_minimum_decryption_version(make_runtime: RuntimeFactory,
                                                 db_url: str) -> None:
    rt = make_runtime(db_url)
    rt.keys.create_key("k", BOTH, ACTOR)
    v1 = rt.keys.encrypt("k", b"one", b"")
    rt.keys.rotate("k", ACTOR)
    v2 = rt.keys.encrypt("k", b"two", b"")
    key = rt.keys.rotate("k", ACTOR)
    v3 = rt.keys.encrypt("k", b"three", b"")
    assert (v1.version, v2.version, v3.version, key.primary_version) == (1, 2, 3, 3)
    assert len({v.hsm_label for v in key.versions}) == 3
    assert rt.keys.decrypt("k", 1, v1.ciphertext, b"") == b"one"
    assert rt.keys.decrypt("k", 2, v2.ciphertext, b"") == b"two"
    rt.keys.set_min_decrypt_version("k", 2, ACTOR)
    with pytest.raises(InvalidCiphertextError):
        rt.keys.decrypt("k", 1, v1.ciphertext, b"")
    assert rt.keys.decrypt("k", 2, v2.ciphertext, b"") == b"two"
    with pytest.raises(ValidationError):
        rt.keys.set_min_decrypt_version("k", 4, ACTOR)


def test_destroy_survives_a_database_restore(make_runtime: RuntimeFactory,
                                             tmp_path: Path) -> None:
    db = tmp_path / "kms.db"
    rt = make_runtime(f"sqlite:///{db}")
    rt.keys.create_key("k", BOTH, ACTOR)
    rt.keys.rotate("k", ACTOR)
    enc = rt.keys.encrypt("k", b"shred me", b"")
    old = rt.keys.decrypt  # same process keeps working until destroy
    assert old("k", 2, enc.ciphertext, b"") == b"shred me"
    rt.cache.invalidate()
    rt.engine.dispose()
    backup = tmp_path / "backup.db"
    shutil.copy(db, backup)  # a copy taken before the destroy (key ENABLED in it)
    for suffix in ("-wal", "-shm"):
        if Path(str(db) + suffix).exists():
            shutil.copy(str(db) + suffix, str(backup) + suffix)
    rt.keys.revoke("k", "compromised", ACTOR)
    rt.keys.destroy("k", ACTOR)
    with pytest.raises(InvalidStateError):
        rt.keys.decrypt("k", 2, enc.ciphertext, b"")
    # Restore the old database under the same HSM: the registry says ENABLED again,
    # but the HSM objects are gone, so nothing decrypts.
    restored = make_runtime(f"sqlite:///{backup}", token_label=_token_of(rt))
    assert restored.registry.get_key("k").state is KeyState.ENABLED
    with pytest.raises(InvalidStateError, match="not available"):
        restored.keys.decrypt("k", 2, enc.ciphertext, b"")
    with pytest.raises(InvalidStateError):
        restored.keys.encrypt("k", b"x", b"")


def _token_of(rt: Runtime) -> str:
    return rt.settings.token_label


def test_import_existing_hsm_key(make_runtime: RuntimeFactory, sqlite_url: str) -> None:
    from hsm import AesUsage

    rt = make_runtime(sqlite_url)
    rt.hsm.generate_aes_key("customer-made", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    rt.hsm.generate_aes_key("encrypt-only", [AesUsage.ENCRYPT])
    key = rt.keys.import_hsm_key("imported", "customer-made", BOTH, ACTOR)
    assert key.versions[0].imported and key.versions[0].hsm_label == "customer-made"
    enc = rt.keys.encrypt("imported", b"x", b"")
    assert rt.keys.decrypt("imported", 1, enc.ciphertext, b"") == b"x"
    with pytest.raises(ConflictError):
        rt.keys.import_hsm_key("again", "customer-made", BOTH, ACTOR)
    with pytest.raises(KeyNotFoundError):
        rt.keys.import_hsm_key("missing", "no-such-label", BOTH, ACTOR)
    with pytest.raises(ValidationError, match="DECRYPT"):
        rt.keys.import_hsm_key("weak", "encrypt-only", BOTH, ACTOR)


def test_kill_switch_same_process_first_call_refused(make_runtime: RuntimeFactory,
                                                     db_url: str) -> None:
    rt = make_runtime(db_url)
    rt.keys.create_key("k", BOTH, ACTOR)
    enc = rt.keys.encrypt("k", b"x", b"")
    for _ in range(10):  # warm the cache
        rt.keys.decrypt("k", 1, enc.ciphertext, b"")
    rt.keys.revoke("k", "incident", ACTOR)
    start = time.perf_counter()
    with pytest.raises(InvalidStateError):
        rt.keys.decrypt("k", 1, enc.ciphertext, b"")
    print(f"same-process refusal: first call after revoke, "
          f"{(time.perf_counter() - start) * 1000:.3f} ms")
    rt.keys.enable("k", ACTOR)
    assert rt.keys.decrypt("k", 1, enc.ciphertext, b"") == b"x"


def test_disabled_store_refuses_its_keys(make_runtime: RuntimeFactory, db_url: str) -> None:
    rt = make_runtime(db_url)
    rt.keys.create_key("k", BOTH, ACTOR)
    rt.keys.encrypt("k", b"x", b"")
    rt.keys.set_store_enabled("default", False, ACTOR)
    with pytest.raises(InvalidStateError, match="store"):
        rt.keys.encrypt("k", b"x", b"")
    rt.keys.set_store_enabled("default", True, ACTOR)
    rt.keys.encrypt("k", b"x", b"")


def test_lifecycle_changes_are_audited_and_log_fails_closed(make_runtime: RuntimeFactory,
                                                            sqlite_url: str) -> None:
    rt = make_runtime(sqlite_url)
    rt.keys.create_key("k", BOTH, ACTOR)
    rt.keys.revoke("k", "why", ACTOR)
    with pytest.raises(InvalidTransitionError):
        rt.keys.revoke("k", "why", ACTOR)
    import json

    recs = [json.loads(b) for b in rt.audit.records()]
    assert [(r["op"], r["outcome"], r["error"]) for r in recs] == [
        ("key.create", "ok", None), ("key.revoke", "ok", None),
        ("key.revoke", "error", "InvalidStateException")]
    assert recs[1]["detail"] == {"reason": "why"}
    assert [r["seq"] for r in recs] == [0, 1, 2]


def test_registry_rows_hold_no_key_material(make_runtime: RuntimeFactory,
                                            db_url: str) -> None:
    rt = make_runtime(db_url)
    rt.keys.create_key("k", BOTH, ACTOR)
    with rt.engine.connect() as conn:
        row = conn.execute(select(schema.key_versions)).one()
    assert set(row._mapping) == {"key_id", "version", "hsm_label", "imported", "created_at"}

