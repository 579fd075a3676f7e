"""One AES-GCM call as a value: what it needs, so that it can be made here or in another
process (the HSM worker process of ``kms serve``, kms/hsmproc/) with the same outcome."""

from __future__ import annotations

from dataclasses import dataclass

from hsm.frozen import quick_init
from hsm.interface import Hsm
from hsm.types import GcmCiphertext


@quick_init
@dataclass(frozen=True, slots=True)
class GcmEncrypt:
    """``Hsm.encrypt(label, plaintext, aad)``: a fresh IV is made by whoever runs it."""

    label: str
    plaintext: bytes
    aad: bytes

    def run(self, hsm: Hsm) -> GcmCiphertext:
        return hsm.encrypt(self.label, self.plaintext, self.aad)


@quick_init
@dataclass(frozen=True, slots=True)
class GcmDecrypt:
    """``Hsm.decrypt(label, iv, ciphertext, tag, aad)``."""

    label: str
    iv: bytes
    ciphertext: bytes
    tag: bytes
    aad: bytes

    def run(self, hsm: Hsm) -> bytes:
        return hsm.decrypt(self.label, self.iv, self.ciphertext, self.tag, self.aad)


GcmCall = GcmEncrypt | GcmDecrypt
GcmResult = GcmCiphertext | bytes
