"""The XKS keyring for :mod:`kms.envelope`: data keys wrapped by an XKS encrypt callback.

Wrapped form (opaque to everyone else, version 1):
``0x01 || u8 len(iv) || iv || u8 len(metadata) || metadata || tag(16) || ciphertext``.
The envelope's keyring AAD (keyring id, key id, context hash) is sent as the XKS
``additionalAuthenticatedData``, so the proxy's HSM binds it; the key version travels inside
the proxy's ``ciphertextMetadata`` (authenticated by the proxy), so the blob records 0.
"""

from __future__ import annotations

import struct
from urllib.parse import urlsplit

from kms.client.xks_client import XksCiphertext, XksClient
from kms.envelope.keyring import WrappedKey
from kms.errors import InvalidCiphertextError

WRAP_VERSION = 1
TAG_LEN = 16


def _pack(ct: XksCiphertext) -> bytes:
    md = ct.metadata or b""
    return (bytes([WRAP_VERSION, len(ct.iv)]) + ct.iv + bytes([len(md)]) + md + ct.tag
            + ct.ciphertext)


def _unpack(data: bytes) -> XksCiphertext:
    bad = InvalidCiphertextError("ciphertext is invalid or does not match this key and context")
    if len(data) < 2 or data[0] != WRAP_VERSION:
        raise bad
    iv_len = data[1]
    if iv_len not in (12, 16) or len(data) < 2 + iv_len + 1:
        raise bad
    iv = data[2:2 + iv_len]
    pos = 2 + iv_len
    (md_len,) = struct.unpack_from(">B", data, pos)
    pos += 1
    if md_len > 20 or len(data) < pos + md_len + TAG_LEN:
        raise bad
    md = data[pos:pos + md_len]
    pos += md_len
    tag = data[pos:pos + TAG_LEN]
    return XksCiphertext(ciphertext=data[pos + TAG_LEN:], iv=iv, tag=tag,
                         metadata=md or None)


class XksKeyring:
    """A :class:`kms.envelope.keyring.Keyring` over one XKS key store."""

    def __init__(self, client: XksClient, keyring_id: str | None = None) -> None:
        self.client = client
        if keyring_id is None:
            parts = urlsplit(client.endpoint)
            keyring_id = f"xks:{parts.netloc}{parts.path}"[:64]
        self.keyring_id = keyring_id

    def wrap_data_key(self, key_id: str, data_key: bytes, aad: bytes) -> WrappedKey:
        ct = self.client.encrypt(key_id, data_key, aad)
        return WrappedKey(self.keyring_id, key_id, 0, _pack(ct))

    def unwrap_data_key(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        if wrapped.keyring_id != self.keyring_id or wrapped.key_version != 0:
            raise InvalidCiphertextError(
                "ciphertext is invalid or does not match this key and context")
        return self.client.decrypt(wrapped.key_id, _unpack(wrapped.wrapped), aad)
