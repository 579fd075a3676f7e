"""DataKeyCache: hard limits with an injected clock, purge, and no leaking key material."""

from __future__ import annotations

import copy
import pickle

import pytest

from kms.envelope import DataKeyCache, EnvelopeEncryptor, SecretBytes, parse_header
from kms.envelope.testing import StaticAesKeyring
from kms.errors import InvalidCiphertextError, InvalidStateError

from .conftest import KEY_A1

CONTEXT = {"tenant": "acme"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _setup(
    clock: FakeClock, **limits: int | float
) -> tuple[StaticAesKeyring, DataKeyCache, EnvelopeEncryptor]:
    keyring = StaticAesKeyring({"key-a": [KEY_A1], "key-b": [KEY_A1]})
    cache = DataKeyCache(clock=clock, **limits)  # type: ignore[arg-type]
    return keyring, cache, EnvelopeEncryptor(keyring, "key-a", cache=cache)


def test_defaults() -> None:
    cache = DataKeyCache()
    assert (cache.max_age_seconds, cache.max_messages, cache.max_bytes) == (60.0, 10_000, 1 << 30)


def test_encryption_reuses_data_key_until_max_age(clock: FakeClock) -> None:
    keyring, _, encryptor = _setup(clock, max_age_seconds=60)
    first = encryptor.encrypt(b"a", CONTEXT)
    clock.now += 59.999
    second = encryptor.encrypt(b"b", CONTEXT)
    assert keyring.wrap_calls == 1
    assert _wrapped(first) == _wrapped(second)
    clock.now += 0.001  # exactly max age: no longer usable
    third = encryptor.encrypt(b"c", CONTEXT)
    assert keyring.wrap_calls == 2
    assert _wrapped(third) != _wrapped(first)
    for blob, plaintext in ((first, b"a"), (second, b"b"), (third, b"c")):
        assert encryptor.decrypt(blob, CONTEXT) == plaintext


def _wrapped(blob: bytes) -> bytes:
    return parse_header(blob).wrapped_key


def test_max_messages(clock: FakeClock) -> None:
    keyring, _, encryptor = _setup(clock, max_messages=3)
    for _ in range(3):
        encryptor.encrypt(b"x", CONTEXT)
    assert keyring.wrap_calls == 1
    encryptor.encrypt(b"x", CONTEXT)
    assert keyring.wrap_calls == 2
    encryptor.encrypt(b"x", CONTEXT)
    encryptor.encrypt(b"x", CONTEXT)
    assert keyring.wrap_calls == 2


def test_max_bytes(clock: FakeClock) -> None:
    keyring, cache, encryptor = _setup(clock, max_bytes=100)
    encryptor.encrypt(b"x" * 60, CONTEXT)
    encryptor.encrypt(b"x" * 40, CONTEXT)  # 100 bytes: still within the limit
    assert keyring.wrap_calls == 1
    encryptor.encrypt(b"x", CONTEXT)  # would be 101
    assert keyring.wrap_calls == 2
    cache.purge()
    encryptor.encrypt(b"x" * 101, CONTEXT)  # larger than max_bytes: never cached
    encryptor.encrypt(b"x", CONTEXT)
    assert keyring.wrap_calls == 4
    assert len(cache) == 1


def test_cache_key_covers_key_and_context(clock: FakeClock) -> None:
    keyring, cache, encryptor = _setup(clock)
    encryptor.encrypt(b"x", CONTEXT)
    encryptor.encrypt(b"x", {"tenant": "other"})
    EnvelopeEncryptor(keyring, "key-b", cache=cache).encrypt(b"x", CONTEXT)
    other_keyring = StaticAesKeyring({"key-a": [KEY_A1]}, keyring_id="static2")
    EnvelopeEncryptor(other_keyring, "key-a", cache=cache).encrypt(b"x", CONTEXT)
    assert keyring.wrap_calls == 3
    assert other_keyring.wrap_calls == 1
    encryptor.encrypt(b"x", {"tenant": "other"})
    assert keyring.wrap_calls == 3


def test_decryption_cache_bounded_by_max_age(clock: FakeClock) -> None:
    keyring, _, encryptor = _setup(clock, max_age_seconds=10)
    blob = EnvelopeEncryptor(keyring, "key-a").encrypt(b"secret", CONTEXT)
    assert encryptor.decrypt(blob, CONTEXT) == b"secret"
    clock.now += 9.9
    assert encryptor.decrypt(blob, CONTEXT) == b"secret"
    assert keyring.unwrap_calls == 1
    clock.now += 0.1
    assert encryptor.decrypt(blob, CONTEXT) == b"secret"
    assert keyring.unwrap_calls == 2


def test_decryption_cache_does_not_bypass_context(clock: FakeClock) -> None:
    _, _, encryptor = _setup(clock)
    blob = encryptor.encrypt(b"secret", CONTEXT)
    assert encryptor.decrypt(blob, CONTEXT) == b"secret"
    with pytest.raises(InvalidCiphertextError):
        encryptor.decrypt(blob, {"tenant": "other"})


def test_revoked_key_keeps_working_until_max_age_or_purge(clock: FakeClock) -> None:
    keyring, _, encryptor = _setup(clock, max_age_seconds=60)
    blob = encryptor.encrypt(b"secret", CONTEXT)
    assert encryptor.decrypt(blob, CONTEXT) == b"secret"
    keyring.disable("key-a")
    # The documented revocation delay: cached data keys still work ...
    encryptor.encrypt(b"more", CONTEXT)
    assert encryptor.decrypt(blob, CONTEXT) == b"secret"
    # ... until max age ...
    clock.now += 60
    with pytest.raises(InvalidStateError):
        encryptor.encrypt(b"more", CONTEXT)
    with pytest.raises(InvalidStateError):
        encryptor.decrypt(blob, CONTEXT)


def test_purge_stops_a_revoked_key_at_once(clock: FakeClock) -> None:
    keyring, cache, encryptor = _setup(clock)
    blob = encryptor.encrypt(b"secret", CONTEXT)
    encryptor.decrypt(blob, CONTEXT)
    other = EnvelopeEncryptor(keyring, "key-b", cache=cache)
    other.encrypt(b"b", CONTEXT)
    assert len(cache) == 3
    keyring.disable("key-a")
    assert cache.purge("key-a") == 2
    assert len(cache) == 1
    with pytest.raises(InvalidStateError):
        encryptor.encrypt(b"more", CONTEXT)
    with pytest.raises(InvalidStateError):
        encryptor.decrypt(blob, CONTEXT)
    calls = keyring.wrap_calls
    other.encrypt(b"b", CONTEXT)  # key-b's entry survived
    assert keyring.wrap_calls == calls
    assert cache.purge() == 1
    assert len(cache) == 0


def test_capacity_evicts_least_recently_used(clock: FakeClock) -> None:
    keyring, _, encryptor = _setup(clock, capacity=2)
    encryptor.encrypt(b"x", {"n": "1"})
    encryptor.encrypt(b"x", {"n": "2"})
    encryptor.encrypt(b"x", {"n": "1"})  # touch 1: 2 is now least recently used
    encryptor.encrypt(b"x", {"n": "3"})  # evicts 2
    assert keyring.wrap_calls == 3
    encryptor.encrypt(b"x", {"n": "1"})
    assert keyring.wrap_calls == 3
    encryptor.encrypt(b"x", {"n": "2"})
    assert keyring.wrap_calls == 4


def test_bad_limits() -> None:
    for limits in ({"capacity": 0}, {"max_age_seconds": 0}, {"max_messages": 0}, {"max_bytes": -1}):
        with pytest.raises(ValueError):
            DataKeyCache(**limits)  # type: ignore[arg-type]


def test_key_material_is_redacted_and_unpicklable(clock: FakeClock) -> None:
    secret = SecretBytes(KEY_A1)
    assert KEY_A1.hex() not in repr(secret)
    assert repr(KEY_A1) not in repr(secret) and repr(KEY_A1) not in str(secret)
    assert "redacted" in repr(secret)
    assert secret.reveal() == KEY_A1
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            attempt(secret)
    keyring, cache, encryptor = _setup(clock)
    encryptor.encrypt(b"x", CONTEXT)
    for holder in (cache, keyring):
        with pytest.raises(TypeError):
            pickle.dumps(holder)
        assert repr(KEY_A1) not in repr(holder)
