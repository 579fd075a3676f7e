"""Envelope encryption in-process: ours (local HSM keyring, with and without the data-key
cache) against Google Tink's KmsEnvelopeAead (in-memory AES-GCM key-encryption key) and
the AWS Encryption SDK (committing suite without signature, raw AES wrapping key)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from kms.envelope import DataKeyCache, EnvelopeEncryptor

CONTEXT = {"tenant": "bench", "purpose": "prompt-log"}
SIZES = {"1KiB": 1024, "64KiB": 64 * 1024}


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()  # warm
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            fn()
        n += 20
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def pair(encrypt: Callable[[], object], decrypt: Callable[[], object],
         seconds: float) -> dict[str, float]:
    return {"encrypt_ops": round(rate(encrypt, seconds), 1),
            "decrypt_ops": round(rate(decrypt, seconds), 1)}


def ours(keyring: Any, key_id: str, seconds: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode, cache in (("cached", DataKeyCache()), ("uncached", None)):
        enc = EnvelopeEncryptor(keyring, key_id, cache=cache)
        for size_name, size in SIZES.items():
            pt = os.urandom(size)
            blob = enc.encrypt(pt, CONTEXT)
            out[f"{mode}_{size_name}"] = pair(partial(enc.encrypt, pt, CONTEXT),
                                              partial(enc.decrypt, blob, CONTEXT), seconds)
    return out


def tink_peer(seconds: float) -> dict[str, dict[str, float]]:
    import tink
    from tink import aead

    aead.register()
    kek = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
    env = aead.KmsEnvelopeAead(aead.aead_key_templates.AES256_GCM, kek)
    ad = b"tenant=bench;purpose=prompt-log"
    out = {}
    for size_name, size in SIZES.items():
        pt = os.urandom(size)
        ct = env.encrypt(pt, ad)
        out[size_name] = pair(partial(env.encrypt, pt, ad), partial(env.decrypt, ct, ad),
                              seconds)
    return out


def esdk_peer(seconds: float) -> dict[str, dict[str, float]]:
    import aws_encryption_sdk
    from aws_encryption_sdk.identifiers import (
        Algorithm,
        CommitmentPolicy,
        EncryptionKeyType,
        WrappingAlgorithm,
    )
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

    key = os.urandom(32)

    class Provider(RawMasterKeyProvider):  # type: ignore[misc]
        provider_id = "bench"

        def _get_raw_key(self, key_id: Any) -> WrappingKey:
            return WrappingKey(
                wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                wrapping_key=key, wrapping_key_type=EncryptionKeyType.SYMMETRIC)

    provider = Provider()
    provider.add_master_key(b"kek")
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    suite = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    out = {}
    for size_name, size in SIZES.items():
        pt = os.urandom(size)
        ct, _ = client.encrypt(source=pt, key_provider=provider, algorithm=suite,
                               encryption_context=CONTEXT)

        def enc(pt: bytes = pt) -> object:
            return client.encrypt(source=pt, key_provider=provider, algorithm=suite,
                                  encryption_context=CONTEXT)

        def dec(ct: bytes = ct) -> object:
            return client.decrypt(source=ct, key_provider=provider)

        out[size_name] = {"encrypt_ops": round(rate(enc, seconds), 1),
                          "decrypt_ops": round(rate(dec, seconds), 1)}
    return out
