"""Plain value types shared by every HSM implementation."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hsm.frozen import quick_init

GCM_IV_BYTES = 12
GCM_TAG_BYTES = 16
AES_KEY_BITS = 256


class AesUsage(enum.Enum):
    """What an AES key may be used for on the token (CKA_ENCRYPT / CKA_DECRYPT)."""

    ENCRYPT = "ENCRYPT"
    DECRYPT = "DECRYPT"


BOTH_USAGES = frozenset({AesUsage.ENCRYPT, AesUsage.DECRYPT})


@quick_init
@dataclass(frozen=True, slots=True)
class GcmCiphertext:
    """The result of an AES-256-GCM encryption: a fresh 12-byte IV, ciphertext, 16-byte tag."""

    iv: bytes
    ciphertext: bytes
    tag: bytes


@dataclass(frozen=True, slots=True)
class KeyAttributes:
    """The security-relevant attributes of a key as the token reports them."""

    label: str
    key_type: str  # "AES" or "EC"
    sensitive: bool
    extractable: bool
    encrypt: bool
    decrypt: bool
    wrap: bool
    unwrap: bool
    sign: bool
    verify: bool
    derive: bool


class HealthStatus(enum.Enum):
    """The XKS ``healthStatus`` vocabulary."""

    ACTIVE = "ACTIVE"
    DEGRADED = "DEGRADED"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The outcome of a deep probe: a real GCM round trip on the health key."""

    status: HealthStatus
    latency_ms: float
    detail: str
    token_label: str
    token_model: str
