"""The gateway's own master key: a 32-byte file (mode 0600) under GATEWAY_HOME.

It protects what the gateway must be able to use without any tenant's help:

- the tenants' XKS credential secrets, sealed with AES-256-GCM, the AAD binding the tenant
  and the access key id (a sealed secret moved to another row does not open);
- the keyed hashes (HMAC-SHA256) of the virtual keys.

Each use has its own subkey, derived with HKDF-SHA256, so no key serves two purposes.
Sealed form, version 1: ``0x01 || nonce(12) || ciphertext || tag(16)``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_LEN = 32
SEAL_VERSION = 1
NONCE_LEN = 12


class MasterKeyError(Exception):
    """The key file is missing or malformed, or a sealed value does not open."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None,
                info=b"cmk-gateway v1 " + purpose).derive(master)


def create_key_file(path: Path) -> bool:
    """Create the key file (0600) unless it exists; returns True when created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(KEY_LEN))
    return True


class MasterKey:
    """Handle on the gateway key; never prints or pickles its material."""

    __slots__ = ("_hmac_key", "_seal")

    def __init__(self, material: bytes) -> None:
        if len(material) != KEY_LEN:
            raise MasterKeyError("the gateway master key must be 32 bytes")
        self._seal = AESGCM(_derive(material, b"credential-seal"))
        self._hmac_key = _derive(material, b"virtual-key-hash")

    @classmethod
    def load(cls, path: Path) -> MasterKey:
        try:
            mode = path.stat().st_mode & 0o777
            data = path.read_bytes()
        except FileNotFoundError:
            raise MasterKeyError(f"no master key at {path}: run `gateway init`") from None
        if mode & 0o077:
            raise MasterKeyError(f"{path} must not be readable by group or others (chmod 600)")
        return cls(data)

    def __repr__(self) -> str:
        return "MasterKey(<redacted>)"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("MasterKey cannot be pickled")

    @staticmethod
    def _credential_aad(tenant: str, access_key_id: str) -> bytes:
        return b"xks-credential\x00" + tenant.encode() + b"\x00" + access_key_id.encode()

    def seal_credential(self, tenant: str, access_key_id: str, secret: str) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        aad = self._credential_aad(tenant, access_key_id)
        return bytes([SEAL_VERSION]) + nonce + self._seal.encrypt(nonce, secret.encode(), aad)

    def open_credential(self, tenant: str, access_key_id: str, sealed: bytes) -> str:
        if len(sealed) < 1 + NONCE_LEN + 16 or sealed[0] != SEAL_VERSION:
            raise MasterKeyError("sealed credential is malformed")
        nonce, body = sealed[1:1 + NONCE_LEN], sealed[1 + NONCE_LEN:]
        try:
            plain = self._seal.decrypt(nonce, body, self._credential_aad(tenant, access_key_id))
        except InvalidTag:
            raise MasterKeyError("sealed credential does not open for this tenant") from None
        return plain.decode()

    def hash_virtual_key(self, key: str) -> bytes:
        """The keyed hash stored instead of a virtual key (HMAC-SHA256)."""
        return hmac.new(self._hmac_key, key.encode(), hashlib.sha256).digest()
