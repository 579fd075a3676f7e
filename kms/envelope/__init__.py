"""Envelope encryption for applications (the AI gateway first).

    encryptor = EnvelopeEncryptor(keyring, "tenant-key-1", cache=DataKeyCache())
    blob = encryptor.encrypt(b"prompt ...", {"tenant": "acme", "kind": "prompt"})
    plaintext = encryptor.decrypt(blob, {"tenant": "acme", "kind": "prompt"})

Each blob carries a fresh 32-byte message id and its data key wrapped by a
:class:`~kms.envelope.keyring.Keyring`; the payload is AES-256-GCM under a key derived
from the data key and the message id, with a key commitment. The encryption context is
required on both calls and is not stored in the blob. Any failure to decrypt raises the
one opaque :class:`kms.errors.InvalidCiphertextError`; keyring errors (revoked key, key
service unreachable) pass through as their own :class:`kms.errors.KmsError`.
Format and limits: docs/envelope-format.md.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from kms.envelope import format as _format
from kms.envelope.cache import DataKeyCache
from kms.envelope.context import context_digest, encode_context
from kms.envelope.format import (
    DATA_KEY_LEN,
    DEFAULT_FRAME_SIZE,
    MAX_FRAME_SIZE,
    MAX_KEY_ID_LEN,
    MAX_KEYRING_ID_LEN,
    MESSAGE_ID_LEN,
    EnvelopeHeader,
    parse_header,
)
from kms.envelope.keyring import Keyring, WrappedKey
from kms.envelope.secret import SecretBytes
from kms.errors import InvalidCiphertextError

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "DataKeyCache",
    "EnvelopeEncryptor",
    "EnvelopeHeader",
    "Keyring",
    "SecretBytes",
    "WrappedKey",
    "encode_context",
    "parse_header",
]


def payload_digest(ctx_digest: bytes, associated_data: bytes) -> bytes:
    """What the payload's AAD binds: the context digest, and the per-blob associated data
    when there is any. Associated data is bound to the payload only, not to the data-key
    wrap, so blobs that differ only in it (e.g. a request id) can share a cached data key;
    a blob still opens only with the exact associated data it was made with."""
    if not associated_data:
        return ctx_digest
    return hashlib.sha256(b"KMSE-ad-v1\x00" + ctx_digest
                          + hashlib.sha256(associated_data).digest()).digest()


class EnvelopeEncryptor:
    """Encrypts and decrypts blobs under one key of one keyring."""

    def __init__(
        self,
        keyring: Keyring,
        key_id: str,
        *,
        cache: DataKeyCache | None = None,
        frame_size: int = DEFAULT_FRAME_SIZE,
    ) -> None:
        """``frame_size``: plaintexts longer than this are split into frames of this size.

        ``cache``: share one :class:`DataKeyCache` between encryptors to save keyring
        calls; without it every encrypt wraps a new data key and every decrypt unwraps.
        """
        if not _format.is_valid_id(keyring.keyring_id, MAX_KEYRING_ID_LEN):
            raise ValueError("keyring id must be 1-64 printable ASCII characters")
        if not _format.is_valid_id(key_id, MAX_KEY_ID_LEN):
            raise ValueError("key id must be 1-128 printable ASCII characters")
        if not 0 < frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"frame size must be 1-{MAX_FRAME_SIZE}")
        self._keyring = keyring
        self._keyring_id = keyring.keyring_id
        self._key_id = key_id
        self._cache = cache
        self._frame_size = frame_size
        self._wrap_aad_prefix = _format.wrap_aad_prefix(self._keyring_id, key_id)

    @property
    def key_id(self) -> str:
        return self._key_id

    def __repr__(self) -> str:
        return f"EnvelopeEncryptor(keyring_id={self._keyring_id!r}, key_id={self._key_id!r})"

    def encrypt(self, plaintext: bytes, context: Mapping[str, str], *,
                associated_data: bytes = b"") -> bytes:
        """Encrypt ``plaintext``, bound to ``context`` (which decrypt must be given again).

        ``associated_data`` is bound to this blob's payload only (see :func:`payload_digest`):
        put per-record values (row or request ids) there, and keep ``context`` to what many
        blobs share, so that the data-key cache can work.
        """
        if not isinstance(plaintext, bytes) or not isinstance(associated_data, bytes):
            raise TypeError("plaintext and associated data must be bytes")
        ctx_digest = context_digest(context)
        size = len(plaintext)
        materials = None
        # the id part of the header, for a fresh data key only (see _format.encode_header)
        ids: bytes | None = self._wrap_aad_prefix
        cache = self._cache
        if cache is not None:
            cache_key = (self._keyring_id, self._key_id, ctx_digest)
            materials = cache.take_for_encryption(cache_key, size)
        if materials is None:
            data_key = os.urandom(DATA_KEY_LEN)
            wrapped = self._keyring.wrap_data_key(
                self._key_id, data_key, self._wrap_aad_prefix + ctx_digest
            )
            if wrapped.keyring_id != self._keyring_id or wrapped.key_id != self._key_id:
                raise ValueError("keyring returned a wrapped key for another keyring or key")
            if cache is not None:
                cache.put_for_encryption(cache_key, SecretBytes(data_key), wrapped, size)
        else:
            data_key = materials[0].reveal()
            wrapped = materials[1]
            ids = None
        return _format.seal(
            wrapped=wrapped,
            data_key=data_key,
            message_id=os.urandom(MESSAGE_ID_LEN),
            plaintext=plaintext,
            context_digest=payload_digest(ctx_digest, associated_data),
            frame_size=self._frame_size,
            ids=ids,
        )

    def decrypt(self, blob: bytes, context: Mapping[str, str], *,
                associated_data: bytes = b"") -> bytes:
        """Decrypt a blob made by :meth:`encrypt` under this keyring, key id and ``context``.

        Raises ``InvalidCiphertextError`` (one fixed message) for any malformed, modified
        or mismatched blob; keyring errors pass through.
        """
        header = parse_header(blob)
        if header.keyring_id != self._keyring_id or header.key_id != self._key_id:
            raise InvalidCiphertextError(_format.INVALID_CIPHERTEXT)
        ctx_digest = context_digest(context)
        cache = self._cache
        data_key = None
        if cache is not None:
            cache_key = (
                self._keyring_id,
                self._key_id,
                header.key_version,
                header.wrapped_key,
                ctx_digest,
            )
            cached = cache.get_for_decryption(cache_key)
            data_key = cached.reveal() if cached is not None else None
        if data_key is None:
            try:
                data_key = self._keyring.unwrap_data_key(
                    header.wrapped, self._wrap_aad_prefix + ctx_digest
                )
            except InvalidCiphertextError:
                # Same message whichever layer failed: no hint for a decryption oracle.
                raise InvalidCiphertextError(_format.INVALID_CIPHERTEXT) from None
            if len(data_key) != DATA_KEY_LEN:
                raise InvalidCiphertextError(_format.INVALID_CIPHERTEXT)
            if cache is not None:
                cache.put_for_decryption(cache_key, SecretBytes(data_key))
        return _format.unseal(header, blob, data_key,
                              payload_digest(ctx_digest, associated_data))
