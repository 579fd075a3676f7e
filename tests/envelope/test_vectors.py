"""Committed test vectors (tests/vectors/envelope/v1.json), checked byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kms.envelope import EnvelopeEncryptor, parse_header
from kms.envelope import format as envelope_format
from kms.envelope.context import context_digest, encode_context
from kms.envelope.testing import StaticAesKeyring
from kms.errors import InvalidCiphertextError

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "envelope" / "v1.json").read_text(encoding="utf-8")
)


def _keyring(keyring_id: str) -> StaticAesKeyring:
    keys = VECTORS["keyrings"][keyring_id]
    return StaticAesKeyring(
        {key: [bytes.fromhex(m) for m in ms] for key, ms in keys.items()}, keyring_id=keyring_id
    )


@pytest.fixture(params=VECTORS["vectors"], ids=lambda v: v["name"])
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.param  # type: ignore[no-any-return]


def test_vector_decrypts(vector: dict[str, Any]) -> None:
    encryptor = EnvelopeEncryptor(_keyring(vector["keyring_id"]), vector["key_id"])
    blob = bytes.fromhex(vector["blob"])
    assert encryptor.decrypt(blob, vector["context"]) == bytes.fromhex(vector["plaintext"])


def test_vector_header(vector: dict[str, Any]) -> None:
    header = parse_header(bytes.fromhex(vector["blob"]))
    assert header.version == 1
    assert header.suite_id == 1
    assert header.keyring_id == vector["keyring_id"]
    assert header.key_id == vector["key_id"]
    assert header.key_version == vector["key_version"]
    assert header.framed == vector["framed"]
    assert header.frame_size == (vector["frame_size"] if vector["framed"] else 0)
    assert header.message_id.hex() == vector["message_id"]


def test_vector_context_encoding(vector: dict[str, Any]) -> None:
    assert encode_context(vector["context"]).hex() == vector["context_encoding"]
    assert context_digest(vector["context"]).hex() == vector["context_digest"]


def test_vector_reseals_byte_for_byte(vector: dict[str, Any]) -> None:
    blob = bytes.fromhex(vector["blob"])
    header = parse_header(blob)
    keyring = _keyring(vector["keyring_id"])
    aad = envelope_format.wrap_aad_prefix(header.keyring_id, header.key_id) + bytes.fromhex(
        vector["context_digest"]
    )
    data_key = keyring.unwrap_data_key(header.wrapped, aad)
    assert data_key.hex() == vector["data_key"]
    resealed = envelope_format.seal(
        wrapped=header.wrapped,
        data_key=data_key,
        message_id=header.message_id,
        plaintext=bytes.fromhex(vector["plaintext"]),
        context_digest=bytes.fromhex(vector["context_digest"]),
        frame_size=vector["frame_size"],
    )
    assert resealed == blob


def test_vector_rejects_other_context(vector: dict[str, Any]) -> None:
    encryptor = EnvelopeEncryptor(_keyring(vector["keyring_id"]), vector["key_id"])
    other = {**vector["context"], "extra": "x"}
    with pytest.raises(InvalidCiphertextError):
        encryptor.decrypt(bytes.fromhex(vector["blob"]), other)


def test_context_sorted_by_utf8_key_bytes() -> None:
    # U+00E9 (0xC3 0xA9) sorts after "z" (0x7A); "a\U0001F600" (0x61 0xF0...) after "ab".
    (vector,) = [v for v in VECTORS["vectors"] if v["name"] == "unicode-context-sorted-by-utf8"]
    encoded = bytes.fromhex(vector["context_encoding"])
    keys = []
    pos = 2
    for _ in range(int.from_bytes(encoded[:2], "big")):
        klen = int.from_bytes(encoded[pos : pos + 2], "big")
        keys.append(encoded[pos + 2 : pos + 2 + klen].decode())
        pos += 2 + klen
        pos += 2 + int.from_bytes(encoded[pos : pos + 2], "big")
    assert pos == len(encoded)
    assert keys == ["Z", "ab", "a\U0001f600", "z", "\u00e9"]
