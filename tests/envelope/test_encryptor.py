"""EnvelopeEncryptor: round trips and what a blob must not decrypt under."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.envelope import EnvelopeEncryptor, parse_header
from kms.envelope.context import MAX_PAIRS, encode_context
from kms.envelope.format import INVALID_CIPHERTEXT, derive_keys
from kms.envelope.testing import StaticAesKeyring
from kms.errors import InvalidCiphertextError, InvalidStateError, ValidationError

from .conftest import KEY_A1, KEY_B1

CONTEXT = {"tenant": "acme", "kind": "prompt"}
ROUND_TRIP_KEYRING = StaticAesKeyring({"key-a": [KEY_A1]})

contexts = st.dictionaries(
    st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode("utf-8", "replace")) <= 256),
    st.text(max_size=40),
    max_size=8,
).filter(lambda c: all(_encodable(k) and _encodable(v) for k, v in c.items()))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(
    plaintext=st.binary(max_size=200),
    frame_size=st.sampled_from([1, 7, 16, 64, 65536]),
    context=contexts,
)
def test_round_trip(plaintext: bytes, frame_size: int, context: dict[str, str]) -> None:
    encryptor = EnvelopeEncryptor(ROUND_TRIP_KEYRING, "key-a", frame_size=frame_size)
    blob = encryptor.encrypt(plaintext, context)
    assert encryptor.decrypt(blob, context) == plaintext
    assert parse_header(blob).framed == (len(plaintext) > frame_size)
    # Context order does not matter (canonical encoding).
    assert encryptor.decrypt(blob, dict(reversed(list(context.items())))) == plaintext


def test_round_trip_multi_frame_default_frame_size(encryptor: EnvelopeEncryptor) -> None:
    for size in (0, 1, 65535, 65536, 65537, 3 * 65536, 3 * 65536 + 17):
        plaintext = os.urandom(size)
        blob = encryptor.encrypt(plaintext, CONTEXT)
        assert encryptor.decrypt(blob, CONTEXT) == plaintext


def test_blobs_are_randomized(encryptor: EnvelopeEncryptor) -> None:
    assert encryptor.encrypt(b"same", CONTEXT) != encryptor.encrypt(b"same", CONTEXT)


def _assert_rejected(encryptor: EnvelopeEncryptor, blob: bytes, context: dict[str, str]) -> None:
    with pytest.raises(InvalidCiphertextError, match=f"^{INVALID_CIPHERTEXT}$"):
        encryptor.decrypt(blob, context)


@pytest.mark.parametrize(
    "other",
    [{}, {"tenant": "acme"}, {"tenant": "acme", "kind": "log"}, {**CONTEXT, "x": ""}],
)
def test_other_context_fails(encryptor: EnvelopeEncryptor, other: dict[str, str]) -> None:
    _assert_rejected(encryptor, encryptor.encrypt(b"secret", CONTEXT), other)
    framed = EnvelopeEncryptor(encryptor._keyring, "key-a", frame_size=4)
    _assert_rejected(framed, framed.encrypt(b"secret prompt", CONTEXT), other)


def test_other_key_fails(keyring: StaticAesKeyring, encryptor: EnvelopeEncryptor) -> None:
    blob = encryptor.encrypt(b"secret", CONTEXT)
    _assert_rejected(EnvelopeEncryptor(keyring, "key-b"), blob, CONTEXT)


def test_wrapped_key_cannot_be_relabelled_to_another_key() -> None:
    # Same key material under two key ids: the key id is bound in the wrap AAD.
    keyring = StaticAesKeyring({"key-a": [KEY_A1], "key-b": [KEY_A1]})
    blob = EnvelopeEncryptor(keyring, "key-a").encrypt(b"secret", CONTEXT)
    relabelled = blob.replace(b"\x05key-a", b"\x05key-b", 1)
    _assert_rejected(EnvelopeEncryptor(keyring, "key-b"), relabelled, CONTEXT)


def test_other_version_fails(keyring: StaticAesKeyring, encryptor: EnvelopeEncryptor) -> None:
    blob_v1 = encryptor.encrypt(b"secret", CONTEXT)
    assert keyring.add_version("key-a") == 2
    blob_v2 = encryptor.encrypt(b"secret", CONTEXT)
    assert parse_header(blob_v1).key_version == 1
    assert parse_header(blob_v2).key_version == 2
    # Old blobs still decrypt (the version comes from the blob) ...
    assert encryptor.decrypt(blob_v1, CONTEXT) == b"secret"
    assert encryptor.decrypt(blob_v2, CONTEXT) == b"secret"
    # ... but a blob relabelled to the other version does not.
    header = parse_header(blob_v1)
    pos = header.header_length - 64 - 2 - len(header.wrapped_key) - 4
    relabelled = blob_v1[:pos] + (2).to_bytes(4, "big") + blob_v1[pos + 4 :]
    assert parse_header(relabelled).key_version == 2
    _assert_rejected(encryptor, relabelled, CONTEXT)


def test_other_keyring_fails(keyring: StaticAesKeyring, encryptor: EnvelopeEncryptor) -> None:
    blob = encryptor.encrypt(b"secret", CONTEXT)
    same_keys = StaticAesKeyring({"key-a": [KEY_A1], "key-b": [KEY_B1]}, keyring_id="static2")
    _assert_rejected(EnvelopeEncryptor(same_keys, "key-a"), blob, CONTEXT)
    other_keys = StaticAesKeyring({"key-a": [os.urandom(32)]}, keyring_id="static")
    _assert_rejected(EnvelopeEncryptor(other_keys, "key-a"), blob, CONTEXT)


def test_revoked_key_error_passes_through(
    keyring: StaticAesKeyring, encryptor: EnvelopeEncryptor
) -> None:
    blob = encryptor.encrypt(b"secret", CONTEXT)
    keyring.disable("key-a")
    with pytest.raises(InvalidStateError):
        encryptor.decrypt(blob, CONTEXT)
    with pytest.raises(InvalidStateError):
        encryptor.encrypt(b"secret", CONTEXT)


def test_parse_header_reports_key_without_decrypting(encryptor: EnvelopeEncryptor) -> None:
    header = parse_header(encryptor.encrypt(b"x" * 100, CONTEXT))
    assert (header.keyring_id, header.key_id, header.key_version) == ("static", "key-a", 1)
    assert not header.framed
    assert "wrapped_key" not in repr(header)


def test_derive_keys_is_rfc5869_hkdf_expand() -> None:
    data_key, message_id = os.urandom(32), os.urandom(32)
    payload_key, commitment = derive_keys(data_key, message_id)
    expand = HKDFExpand(hashes.SHA256(), 32, b"KMSE\x01\x01payload-key" + message_id)
    assert payload_key == expand.derive(data_key)
    expand = HKDFExpand(hashes.SHA256(), 32, b"KMSE\x01\x01commitment" + message_id)
    assert commitment == expand.derive(data_key)
    assert payload_key != commitment


@pytest.mark.parametrize(
    "context",
    [
        {"k": 1},
        {1: "v"},
        {"": "v"},
        {"k": b"v"},
        {"k" * 257: "v"},
        {"k": "v" * 4097},
        {f"k{i}": "v" for i in range(MAX_PAIRS + 1)},
        {f"k{i}": "v" * 4000 for i in range(5)},
        {"k": "\ud800"},
    ],
)
def test_bad_context_is_a_validation_error(encryptor: EnvelopeEncryptor, context: object) -> None:
    with pytest.raises(ValidationError):
        encryptor.encrypt(b"x", context)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        encode_context(context)  # type: ignore[arg-type]


def test_bad_arguments(keyring: StaticAesKeyring) -> None:
    with pytest.raises(ValueError):
        EnvelopeEncryptor(keyring, "")
    with pytest.raises(ValueError):
        EnvelopeEncryptor(keyring, "key a")
    with pytest.raises(ValueError):
        EnvelopeEncryptor(keyring, "key-a", frame_size=0)
    with pytest.raises(TypeError):
        EnvelopeEncryptor(keyring, "key-a").encrypt("text", {})  # type: ignore[arg-type]
