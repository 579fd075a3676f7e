"""In-process fakes for tests and benchmarks. Not for production: keys live in memory."""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms.envelope.keyring import WrappedKey
from kms.errors import InvalidCiphertextError, InvalidStateError, KeyNotFoundError

_NONCE_LEN = 12
_TAG_LEN = 16
_INVALID = "wrapped data key is invalid or does not match this key"


class StaticAesKeyring:
    """A :class:`~kms.envelope.keyring.Keyring` with AES-256-GCM keys held in memory.

    ``keys`` maps a key id to its versions' 32-byte key materials, oldest first: version 1
    is ``keys[key_id][0]``, and the newest version is the primary. Wrapped key layout:
    nonce (12) || ciphertext (32) || tag (16); the GCM associated data is
    ``b"static-aes-v1" || u32 version || u8 len(key id) || key id || aad``, so a wrapped key
    does not unwrap under another key, version or aad.
    """

    def __init__(self, keys: Mapping[str, Sequence[bytes]], keyring_id: str = "static") -> None:
        self.keyring_id = keyring_id
        self._versions: dict[str, list[AESGCM]] = {}
        self._disabled: set[str] = set()
        self.wrap_calls = 0
        self.unwrap_calls = 0
        for key_id, materials in keys.items():
            for material in materials:
                self.add_version(key_id, material)

    def add_version(self, key_id: str, material: bytes | None = None) -> int:
        """Add a new primary version of ``key_id`` (random if no material); returns it."""
        material = os.urandom(32) if material is None else material
        if len(material) != 32:
            raise ValueError("key material must be 32 bytes")
        versions = self._versions.setdefault(key_id, [])
        versions.append(AESGCM(material))
        return len(versions)

    def disable(self, key_id: str) -> None:
        """Revoke ``key_id``: wrap and unwrap raise ``InvalidStateError`` from now on."""
        self._disabled.add(key_id)

    def enable(self, key_id: str) -> None:
        self._disabled.discard(key_id)

    def __repr__(self) -> str:
        return f"StaticAesKeyring(keyring_id={self.keyring_id!r}, keys=<redacted>)"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("StaticAesKeyring holds key material and cannot be pickled")

    def _versions_of(self, key_id: str) -> list[AESGCM]:
        versions = self._versions.get(key_id)
        if versions is None:
            raise KeyNotFoundError("key not found")
        if key_id in self._disabled:
            raise InvalidStateError("key is disabled")
        return versions

    @staticmethod
    def _aad(key_id: str, version: int, aad: bytes) -> bytes:
        key = key_id.encode("utf-8")
        return b"static-aes-v1" + struct.pack(">IB", version, len(key)) + key + aad

    def wrap_data_key(self, key_id: str, data_key: bytes, aad: bytes) -> WrappedKey:
        self.wrap_calls += 1
        versions = self._versions_of(key_id)
        version = len(versions)
        nonce = os.urandom(_NONCE_LEN)
        sealed = versions[-1].encrypt(nonce, data_key, self._aad(key_id, version, aad))
        return WrappedKey(self.keyring_id, key_id, version, nonce + sealed)

    def unwrap_data_key(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        self.unwrap_calls += 1
        versions = self._versions_of(wrapped.key_id)
        blob = wrapped.wrapped
        if (
            wrapped.keyring_id != self.keyring_id
            or not 1 <= wrapped.key_version <= len(versions)
            or len(blob) < _NONCE_LEN + _TAG_LEN
        ):
            raise InvalidCiphertextError(_INVALID)
        try:
            return versions[wrapped.key_version - 1].decrypt(
                blob[:_NONCE_LEN],
                blob[_NONCE_LEN:],
                self._aad(wrapped.key_id, wrapped.key_version, aad),
            )
        except InvalidTag:
            raise InvalidCiphertextError(_INVALID) from None
