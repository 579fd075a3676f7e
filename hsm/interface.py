"""The interface every HSM implementation offers (PKCS#11 for real, in-memory for tests).

Thread safety: every method may be called from any thread. Async callers must not call
these methods on the event loop thread (each may block on the module lock for the length of
one HSM call); they use :class:`hsm.aio.AsyncHsm`, which runs calls on a small dedicated
thread pool.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from hsm.types import AesUsage, GcmCiphertext, HealthReport, KeyAttributes


class Hsm(Protocol):
    """Keys are addressed by label; labels are unique per object class."""

    def generate_aes_key(self, label: str, usages: Collection[AesUsage]) -> None:
        """Create a token AES-256 key: sensitive, non-extractable, only ``usages``."""
        ...

    def has_key(self, label: str) -> bool:
        """True if an AES key with this label exists (raises HsmUnavailable if unsure)."""
        ...

    def list_aes_keys(self) -> list[str]:
        """Labels of all AES keys on the token."""
        ...

    def key_attributes(self, label: str) -> KeyAttributes:
        """The token's view of a key's attributes (AES key, or EC private key)."""
        ...

    def destroy_key(self, label: str) -> None:
        """Destroy every object with this label (crypto-shredding). KeyNotFound if none."""
        ...

    def encrypt(self, label: str, plaintext: bytes, aad: bytes) -> GcmCiphertext:
        """AES-256-GCM with a fresh 12-byte IV generated inside this layer."""
        ...

    def decrypt(self, label: str, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
        """AES-256-GCM decryption; any failure of the data is InvalidCiphertext."""
        ...

    def generate_ec_signing_key(self, label: str) -> None:
        """Create a non-extractable EC P-256 key pair (private: sign only)."""
        ...

    def sign(self, label: str, message: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(message); DER-encoded ECDSA-Sig-Value (RFC 3279)."""
        ...

    def public_key_pem(self, label: str) -> bytes:
        """The public half of an EC signing key, as a SubjectPublicKeyInfo PEM."""
        ...

    def random_bytes(self, n: int) -> bytes:
        """``n`` random bytes from the token's generator."""
        ...

    def probe(self, health_key_label: str) -> HealthReport:
        """A deep health check: a real GCM round trip on the dedicated health key."""
        ...

    def close(self) -> None:
        """Close sessions and release the module."""
        ...
