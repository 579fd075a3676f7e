"""Envelope encryption in-process: ours (local HSM keyring, with and without the data-key
cache) against Google Tink's KmsEnvelopeAead (in-memory AES-GCM key-encryption key) and
the AWS Encryption SDK (committing suite without signature, raw AES wrapping key).

Every case (who, mode, size, operation) is timed in short windows, the cases taking turns
within each round, so that every library sees the same minutes of this noisy machine. A
case's rate is the median of its rounds; a ratio is the median of the rounds' ratios (the
two cases timed within the same round). Timed one after the other instead, in windows of
0.5 s, the same code gave ``envelope_vs_esdk`` 3.52 and then 1.37 two minutes apart: the
Encryption SDK ran at 4,053/s, then 9,025/s (docs/benchmarks-history.md, twelfth pass).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from kms.envelope import DataKeyCache, EnvelopeEncryptor
from kms.envelope.context import context_digest
from kms.envelope.format import wrap_aad_prefix
from kms.keys.service import KeyService
from kms.metrics import InstrumentedHsm

CONTEXT = {"tenant": "bench", "purpose": "prompt-log"}
SIZES = {"1KiB": 1024, "64KiB": 64 * 1024}
ROUNDS = 7

Op = Callable[[], object]
Cases = dict[tuple[str, str, str], Op]  # (who, case, "encrypt_ops" | "decrypt_ops") -> op


def rate(fn: Op, seconds: float) -> float:
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


def _add(cases: Cases, who: str, case: str, encrypt: Op, decrypt: Op) -> None:
    cases[(who, case, "encrypt_ops")] = encrypt
    cases[(who, case, "decrypt_ops")] = decrypt


def ours(keyring: Any, key_id: str) -> Cases:
    cases: Cases = {}
    for mode, cache in (("cached", DataKeyCache()), ("uncached", None)):
        enc = EnvelopeEncryptor(keyring, key_id, cache=cache)
        for size_name, size in SIZES.items():
            pt = os.urandom(size)
            blob = enc.encrypt(pt, CONTEXT)
            _add(cases, "ours", f"{mode}_{size_name}", partial(enc.encrypt, pt, CONTEXT),
                 partial(enc.decrypt, blob, CONTEXT))
    return cases


def hsm_wrap(keys: KeyService, key_id: str, keyring_id: str = "local") -> Op:
    """The one SoftHSM call of an uncached blob and nothing of ours around it: a fresh
    32-byte data key encrypted under the key's primary version with the AAD such a wrap
    has, straight through ``Pkcs11Hsm.encrypt`` (below the key service, the metrics and
    the envelope). No code that makes this call for every blob can be faster than it, so
    its rate over a peer's is the most ``envelope_vs_tink_uncached`` and
    ``envelope_vs_esdk`` can be on this machine and token (``envelope_hsm_limit``)."""
    # the key service's own checks and call, made once: its label and its bound AAD
    _, _, call = keys.encrypt_call(key_id, bytes(32),
                                   wrap_aad_prefix(keyring_id, key_id) + context_digest(CONTEXT))
    hsm = keys.hsm.inner if isinstance(keys.hsm, InstrumentedHsm) else keys.hsm
    label, aad = call.label, call.aad
    return lambda: hsm.encrypt(label, os.urandom(32), aad)


def tink_peer() -> Cases:
    import tink
    from tink import aead

    aead.register()
    kek = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
    env = aead.KmsEnvelopeAead(aead.aead_key_templates.AES256_GCM, kek)
    ad = b"tenant=bench;purpose=prompt-log"
    cases: Cases = {}
    for size_name, size in SIZES.items():
        pt = os.urandom(size)
        ct = env.encrypt(pt, ad)
        _add(cases, "tink", size_name, partial(env.encrypt, pt, ad),
             partial(env.decrypt, ct, ad))
    return cases


def esdk_peer() -> Cases:
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
    cases: Cases = {}
    for size_name, size in SIZES.items():
        pt = os.urandom(size)
        ct, _ = client.encrypt(source=pt, key_provider=provider, algorithm=suite,
                               encryption_context=CONTEXT)

        def enc(pt: bytes = pt) -> object:
            return client.encrypt(source=pt, key_provider=provider, algorithm=suite,
                                  encryption_context=CONTEXT)

        def dec(ct: bytes = ct) -> object:
            return client.decrypt(source=ct, key_provider=provider)

        _add(cases, "esdk", size_name, enc, dec)
    return cases


class Interleaved:
    """The rates of every case, round by round (each case timed once per round)."""

    def __init__(self, rounds: dict[tuple[str, str, str], list[float]]) -> None:
        self.rounds = rounds

    @classmethod
    def run(cls, cases: Cases, seconds: float, rounds: int = ROUNDS) -> Interleaved:
        """Time every case for ``seconds`` in all, in ``rounds`` windows, the cases taking
        turns within each round."""
        out: dict[tuple[str, str, str], list[float]] = {k: [] for k in cases}
        window = seconds / rounds
        for _ in range(rounds):
            for name, op in cases.items():
                out[name].append(rate(op, window))
        return cls(out)

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        """{who: {case: {"encrypt_ops", "decrypt_ops"}}}, each the median of its rounds."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for (who, case, op), rates in self.rounds.items():
            out.setdefault(who, {}).setdefault(case, {})[op] = round(
                statistics.median(rates), 1)
        return out

    def ratio(self, a: tuple[str, str, str], b: tuple[str, str, str]) -> float:
        """The median over rounds of a's rate / b's rate in the same round."""
        return round(statistics.median(x / y for x, y in zip(self.rounds[a], self.rounds[b],
                                                              strict=True)), 3)


HSM_WRAP = ("hsm", "wrap_32B", "encrypt_ops")


def measure(keyring: Any, key_id: str, seconds: float,
            hsm_floor: Op | None = None) -> dict[str, Any]:
    """The ``envelope`` part of ``kms bench``: ``seconds`` per case, spread over the
    rounds; ``hsm_floor`` (:func:`hsm_wrap`) is timed in the same rounds, as the limit."""
    cases = {**ours(keyring, key_id), **tink_peer(), **esdk_peer()}
    if hsm_floor is not None:
        cases[HSM_WRAP] = hsm_floor
    runs = Interleaved.run(cases, seconds)
    enc = "encrypt_ops"
    table = runs.table()
    limit: dict[str, Any] = {}
    if hsm_floor is not None:
        limit = {"envelope_hsm_limit": {
            "hsm_wrap_ops": table.pop("hsm")["wrap_32B"][enc],
            "vs_tink_uncached": runs.ratio(HSM_WRAP, ("tink", "1KiB", enc)),
            "vs_esdk": runs.ratio(HSM_WRAP, ("esdk", "1KiB", enc)),
        }}
    return {
        **limit,
        "envelope": {**table, "rounds": ROUNDS},
        "envelope_vs_tink_cached": runs.ratio(("ours", "cached_1KiB", enc),
                                              ("tink", "1KiB", enc)),
        "envelope_vs_tink_uncached": runs.ratio(("ours", "uncached_1KiB", enc),
                                                ("tink", "1KiB", enc)),
        "envelope_vs_esdk": runs.ratio(("ours", "uncached_1KiB", enc),
                                       ("esdk", "1KiB", enc)),
    }
