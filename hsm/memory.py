"""An in-memory implementation of :class:`hsm.interface.Hsm` for fast unit tests.

It follows the same contract as the PKCS#11 implementation (unique labels, usage flags
enforced, IVs generated inside, one opaque InvalidCiphertext) but keeps keys in process
memory. Never use it in production; the SoftHSM tests are the real check.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hsm.errors import (
    DuplicateLabel,
    HsmUnavailable,
    InvalidCiphertext,
    KeyNotFound,
    PermissionDenied,
)
from hsm.types import (
    GCM_IV_BYTES,
    GCM_TAG_BYTES,
    AesUsage,
    GcmCiphertext,
    HealthReport,
    HealthStatus,
    KeyAttributes,
)


@dataclass
class _AesKey:
    aead: AESGCM
    usages: frozenset[AesUsage]


class InMemoryHsm:
    """A software stand-in. ``available = False`` simulates a lost token."""

    def __init__(self) -> None:
        self._aes: dict[str, _AesKey] = {}
        self._ec: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._lock = threading.Lock()
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise HsmUnavailable("the HSM is unavailable")

    def _aes_key(self, label: str) -> _AesKey:
        self._check()
        key = self._aes.get(label)
        if key is None:
            raise KeyNotFound(f"no key labelled {label!r}")
        return key

    def generate_aes_key(self, label: str, usages: Collection[AesUsage]) -> None:
        with self._lock:
            self._check()
            if label in self._aes or label in self._ec:
                raise DuplicateLabel(f"an object labelled {label!r} exists already")
            self._aes[label] = _AesKey(AESGCM(AESGCM.generate_key(256)), frozenset(usages))

    def has_key(self, label: str) -> bool:
        self._check()
        return label in self._aes

    def list_aes_keys(self) -> list[str]:
        self._check()
        return sorted(self._aes)

    def key_attributes(self, label: str) -> KeyAttributes:
        self._check()
        if label in self._ec:
            return KeyAttributes(label, "EC", True, False, False, False, False, False, True,
                                 False, False)
        key = self._aes_key(label)
        return KeyAttributes(
            label, "AES", True, False, AesUsage.ENCRYPT in key.usages,
            AesUsage.DECRYPT in key.usages, False, False, False, False, False,
        )

    def destroy_key(self, label: str) -> None:
        with self._lock:
            self._check()
            if self._aes.pop(label, None) is None and self._ec.pop(label, None) is None:
                raise KeyNotFound(f"no key labelled {label!r}")

    def encrypt(self, label: str, plaintext: bytes, aad: bytes) -> GcmCiphertext:
        key = self._aes_key(label)
        if AesUsage.ENCRYPT not in key.usages:
            raise PermissionDenied("the token refused this operation")
        iv = os.urandom(GCM_IV_BYTES)
        out = key.aead.encrypt(iv, plaintext, aad)
        return GcmCiphertext(iv, out[:-GCM_TAG_BYTES], out[-GCM_TAG_BYTES:])

    def decrypt(self, label: str, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
        key = self._aes_key(label)
        if AesUsage.DECRYPT not in key.usages:
            raise PermissionDenied("the token refused this operation")
        if len(iv) != GCM_IV_BYTES or len(tag) != GCM_TAG_BYTES:
            raise InvalidCiphertext("invalid ciphertext")
        try:
            return key.aead.decrypt(iv, ciphertext + tag, aad)
        except InvalidTag:
            raise InvalidCiphertext("invalid ciphertext") from None

    def generate_ec_signing_key(self, label: str) -> None:
        with self._lock:
            self._check()
            if label in self._aes or label in self._ec:
                raise DuplicateLabel(f"an object labelled {label!r} exists already")
            self._ec[label] = ec.generate_private_key(ec.SECP256R1())

    def _ec_key(self, label: str) -> ec.EllipticCurvePrivateKey:
        self._check()
        key = self._ec.get(label)
        if key is None:
            raise KeyNotFound(f"no key labelled {label!r}")
        return key

    def sign(self, label: str, message: bytes) -> bytes:
        return self._ec_key(label).sign(message, ec.ECDSA(hashes.SHA256()))

    def public_key_pem(self, label: str) -> bytes:
        return self._ec_key(label).public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )

    def random_bytes(self, n: int) -> bytes:
        self._check()
        return os.urandom(n) if n > 0 else b""

    def probe(self, health_key_label: str) -> HealthReport:
        start = time.perf_counter()
        try:
            ct = self.encrypt(health_key_label, b"probe", b"health")
            self.decrypt(health_key_label, ct.iv, ct.ciphertext, ct.tag, b"health")
            status, detail = HealthStatus.ACTIVE, "ok"
        except KeyNotFound:
            status, detail = HealthStatus.DEGRADED, "health key missing"
        except HsmUnavailable:
            status, detail = HealthStatus.UNAVAILABLE, "HsmUnavailable"
        return HealthReport(status, (time.perf_counter() - start) * 1000, detail, "memory",
                            "InMemoryHsm")

    def close(self) -> None:
        pass
