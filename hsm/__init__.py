"""The sharp layer: PKCS#11 keys and operations behind a small typed interface.

Only :mod:`hsm.pkcs11_hsm` imports ``pkcs11``; nothing here imports ``kms``, ``gateway``,
``fastapi`` or ``sqlalchemy`` (tests/test_import_rules.py checks both).
"""

from hsm.errors import (
    DuplicateLabel,
    HsmConfigError,
    HsmError,
    HsmUnavailable,
    InvalidCiphertext,
    KeyNotFound,
    MechanismUnsupported,
    PermissionDenied,
    RebuildDeferred,
)
from hsm.interface import Hsm
from hsm.pin import Pin, load_pin
from hsm.types import AesUsage, GcmCiphertext, HealthReport, HealthStatus, KeyAttributes

__all__ = [
    "AesUsage",
    "DuplicateLabel",
    "GcmCiphertext",
    "HealthReport",
    "HealthStatus",
    "Hsm",
    "HsmConfigError",
    "HsmError",
    "HsmUnavailable",
    "InvalidCiphertext",
    "KeyAttributes",
    "KeyNotFound",
    "MechanismUnsupported",
    "PermissionDenied",
    "Pin",
    "RebuildDeferred",
    "load_pin",
]
