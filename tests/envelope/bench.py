"""Quick throughput check: .venv/bin/python -m tests.envelope.bench (not a test)."""

from __future__ import annotations

import os
import timeit

from kms.envelope import DataKeyCache, EnvelopeEncryptor
from kms.envelope.testing import StaticAesKeyring

CONTEXT = {"tenant": "acme", "kind": "prompt"}


def measure(encryptor: EnvelopeEncryptor, plaintext: bytes, number: int) -> tuple[float, float]:
    """(encrypts/s, decrypts/s), best of 5 runs."""
    blob = encryptor.encrypt(plaintext, CONTEXT)
    enc = min(timeit.repeat(lambda: encryptor.encrypt(plaintext, CONTEXT), number=number))
    dec = min(timeit.repeat(lambda: encryptor.decrypt(blob, CONTEXT), number=number))
    return number / enc, number / dec


def main(size: int = 1024, number: int = 20000) -> None:
    keyring = StaticAesKeyring({"bench": [os.urandom(32)]})
    plaintext = os.urandom(size)
    for label, cache in (("uncached", None), ("cached", DataKeyCache())):
        enc, dec = measure(EnvelopeEncryptor(keyring, "bench", cache=cache), plaintext, number)
        print(f"{label:9} {size} B: encrypt {enc:8.0f}/s  decrypt {dec:8.0f}/s")


if __name__ == "__main__":
    main()
