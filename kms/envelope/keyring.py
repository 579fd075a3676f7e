"""The keyring seam: who holds the key-encryption key.

``kms.envelope`` generates data keys and frames data; a :class:`Keyring` only wraps and
unwraps a data key under one of its keys. Real keyrings (the local key service, XKS over
HTTP) live elsewhere and implement this protocol; an in-process fake for tests is
:class:`kms.envelope.testing.StaticAesKeyring`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hsm.frozen import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key wrapped by a keyring, as stored in the blob header.

    ``wrapped`` is opaque to everyone but the keyring that made it.
    """

    keyring_id: str
    key_id: str
    key_version: int
    wrapped: bytes

    def __repr__(self) -> str:
        return (
            f"WrappedKey(keyring_id={self.keyring_id!r}, key_id={self.key_id!r}, "
            f"key_version={self.key_version}, wrapped=<{len(self.wrapped)} bytes>)"
        )


class Keyring(Protocol):
    """Wraps and unwraps data keys under a key-encryption key that it holds.

    Contract (docs/envelope-format.md, "Keyrings"):

    - ``keyring_id`` is 1-64 printable ASCII characters and names the key holder (e.g.
      ``"local"``, ``"xks:<store-host-prefix>"``). It is written into every blob.
    - ``wrap_data_key`` encrypts ``data_key`` under the *primary* version of ``key_id``
      with ``aad`` as associated data, and reports the version it used.
    - ``unwrap_data_key`` uses ``wrapped.key_version`` and must authenticate ``aad``,
      ``key_id`` and ``key_version`` (a wrapped key must not unwrap under another key,
      version or aad). It raises :class:`kms.errors.InvalidCiphertextError` when
      authentication fails, and other :class:`kms.errors.KmsError` subclasses for
      revoked keys, missing keys or an unreachable key service.
    """

    keyring_id: str

    def wrap_data_key(self, key_id: str, data_key: bytes, aad: bytes) -> WrappedKey: ...

    def unwrap_data_key(self, wrapped: WrappedKey, aad: bytes) -> bytes: ...
