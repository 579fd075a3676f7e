"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers that take attacker bytes,
started from valid inputs: where Hypothesis draws inputs at random, libFuzzer mutates a
valid blob, body, header block, note or record line byte by byte and keeps every mutation
that reaches new Python code, so it explores the near-valid inputs that get furthest.

``python -m tests.reliability.atheris_targets TARGET [libFuzzer flags]``; TARGET is one of
:data:`TARGETS`. Each target's function raises (and so makes libFuzzer report a crash and
exit non-zero) when the code under test raises anything but its documented refusal, or
breaks a property:

- ``blob``: ``parse_header`` and ``EnvelopeEncryptor.decrypt`` refuse with
  ``InvalidCiphertextError`` / ``KmsError``, and a blob other than the valid one never
  decrypts (authenticity);
- ``xks-body``: the four XKS body parsers refuse with a ``KmsError`` (an XKS errorName);
- ``sigv4``: a header block and body (``name: value`` lines, a blank line, the body)
  verified against the credential that signed the seed: ``SignatureRejected`` or success;
- ``note``: ``parse_note``, ``parse_checkpoint`` and ``verify_note`` refuse with
  ``AuditError``, and only the untouched note verifies;
- ``record-line``: the verifier's classification of one record line never raises, and a
  line its fast path accepts (``CANONICAL_LINE`` and a real day) is one its full path
  accepts as canonical and schema-valid (the fast path must never let through what the
  full one refuses; this target found that it did: tests/audit/test_verify_schema.py).

Run by tests/reliability/test_atheris.py (``ATHERIS_CORPUS_DIR``: where the seeds and
what libFuzzer adds to them go; a fresh temporary directory if unset;
``ATHERIS_RSS_LIMIT_MB``: the memory cap, default 1,024, checked every 2,000 inputs).
``ATHERIS_SABOTAGE=1`` makes the ``blob`` target let its documented refusal through, so
that test can show a crash is reported.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

Target = tuple[list[bytes], Callable[[bytes], None]]


def _blob() -> Target:
    from kms.envelope import EnvelopeEncryptor
    from kms.envelope.format import parse_header
    from kms.envelope.testing import StaticAesKeyring
    from kms.errors import InvalidCiphertextError, KmsError

    enc = EnvelopeEncryptor(StaticAesKeyring({"key-a": [bytes(range(32))]},
                                             keyring_id="static"), "key-a")
    context = {"tenant": "t1"}
    plaintext = b"secret payload " * 20
    valid = enc.encrypt(plaintext, context)
    framed = EnvelopeEncryptor(StaticAesKeyring({"key-a": [bytes(range(32))]},
                                                keyring_id="static"), "key-a",
                               frame_size=64).encrypt(plaintext, context)
    refusal: tuple[type[Exception], ...] = (
        () if os.environ.get("ATHERIS_SABOTAGE") else (KmsError,))

    def one(data: bytes) -> None:
        with contextlib.suppress(InvalidCiphertextError):
            parse_header(data)
        try:
            out = enc.decrypt(data, context)
        except refusal:
            return
        if data not in (valid, framed) or out != plaintext:
            raise AssertionError("a changed blob decrypted")

    return [valid, framed], one


def _xks_body() -> Target:
    import json

    from kms.errors import KmsError
    from kms.xks import wire

    md = {"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
          "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:key/1234abcd",
          "kmsOperation": "Encrypt", "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae"}
    seeds = [json.dumps(doc).encode() for doc in (
        {"requestMetadata": md, "plaintext": "SGVsbG8gV29ybGQh",
         "encryptionAlgorithm": "AES_GCM", "additionalAuthenticatedData": "cHJvamVjdD1hbHBoYQ==",
         "ciphertextDataIntegrityValueAlgorithm": "SHA_256"},
        {"requestMetadata": md, "encryptionAlgorithm": "AES_GCM",
         "ciphertext": "q83vEjRWeJA=", "ciphertextMetadata": "AQAAAAE=",
         "initializationVector": "AAECAwQFBgcICQoL",
         "authenticationTag": "AAECAwQFBgcICQoLDA0ODw==",
         "additionalAuthenticatedData": "cHJvamVjdD1hbHBoYQ=="},
        {"requestMetadata": md},
        {"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r"}})]
    parsers = (wire.parse_encrypt_request, wire.parse_decrypt_request,
               wire.parse_metadata_request, wire.parse_health_request)

    def one(data: bytes) -> None:
        for parse in parsers:
            with contextlib.suppress(KmsError):
                parse(data)

    return seeds, one


def _sigv4() -> Target:
    from datetime import UTC, datetime

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from kms.xks.sigv4 import SignatureRejected, SigningKeyCache, verify_sigv4

    akid, secret = "AKIAI2SFODNN7EXAMPLE", "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE"
    at = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    path = "/xks/kms/xks/v1/keys/foo/encrypt"
    body = b'{"requestMetadata":{"kmsOperation":"Encrypt"},"plaintext":"SGVsbG8="}'
    request = AWSRequest(method="POST", url=f"https://xks.example.com{path}", data=body,
                         headers={"Content-Type": "application/json"})
    signer = SigV4Auth(Credentials(akid, secret), "kms-xks-proxy", "us-east-1")
    signer._timestamp = lambda: at.strftime("%Y%m%dT%H%M%SZ")  # type: ignore[method-assign]
    signer.add_auth(request)
    block = "".join(f"{k}: {v}\n" for k, v in request.headers.items())
    block += "host: xks.example.com\n"
    seed = block.encode("latin-1") + b"\n" + body
    cache = SigningKeyCache()

    def lookup(candidate: str) -> bytes | None:
        return secret.encode() if candidate == akid else None

    def one(data: bytes) -> None:
        head, _, payload = data.partition(b"\n\n")
        headers = []
        for line in head.decode("latin-1").split("\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers.append((name, value.strip()))
        with contextlib.suppress(SignatureRejected):
            verify_sigv4("POST", path, "", dict(headers), payload, lookup=lookup, now=at,
                         raw_headers=headers, key_cache=cache)

    return [seed], one


def _note() -> Target:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from kms.audit.checkpoint import (
        Checkpoint,
        format_checkpoint,
        key_id,
        parse_checkpoint,
        parse_note,
        sign_note,
        verify_note,
    )
    from kms.audit.errors import AuditError

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    origin = "kms.local/audit"
    text = format_checkpoint(Checkpoint(origin=origin, size=12, root=bytes(range(32)),
                                        time="2026-11-28T00:00:00.000000Z"))
    note = sign_note(text, origin, key_id(public),
                     lambda m: private.sign(m, ec.ECDSA(hashes.SHA256())))
    good = note.encode()

    def one(data: bytes) -> None:
        with contextlib.suppress(AuditError):
            parse_note(data)
        with contextlib.suppress(AuditError):
            parse_checkpoint(data.decode("utf-8", "replace"))
        try:
            verify_note(data, public, origin)
        except AuditError:
            return
        if data != good:
            raise AssertionError("a changed note verified")

    return [good, text.encode()], one


def _record_line() -> Target:
    import rfc8785

    from kms.audit.canonical_lines import CANONICAL_LINE
    from kms.audit.record import is_real_day
    from kms.audit.verify import _schema_valid_but_genesis, _slow_check
    from tests.audit.synthetic import make_records

    seeds = list(make_records(10))

    def one(data: bytes) -> None:
        line = data[:-1] if data.endswith(b"\n") else data
        obj, fault, message = _slow_check(line, True)  # the full path: never raises
        m = CANONICAL_LINE.fullmatch(line)
        if m is None or not is_real_day(m.group(5).decode()):
            return  # not on the fast path
        # Record 0's prev is the chain check's (a broken chain), not the fast path's.
        genesis_only = (type(obj) is dict and obj.get("seq") == 0
                        and _schema_valid_but_genesis(obj) and rfc8785.dumps(obj) == line)
        if fault is not None and not genesis_only:
            raise AssertionError(f"the fast path accepts a line the full check refuses: "
                                 f"{message}")

    return [s.rstrip(b"\n") for s in seeds], one


TARGETS: dict[str, Callable[[], Target]] = {
    "blob": _blob, "xks-body": _xks_body, "sigv4": _sigv4, "note": _note,
    "record-line": _record_line,
}


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not libFuzzer's ``-rss_limit_mb``: that
    reads ``ru_maxrss``, which Linux carries over ``execve`` from the parent, so under a
    test runner that has grown to 1.7 GB every target "used" 1.7 GB from its first input."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _capped(one: Callable[[bytes], None], limit_mb: float) -> Callable[[bytes], None]:
    """``one``, failing (a crash for libFuzzer) once the peak RSS passes ``limit_mb``."""
    calls = [0]

    def guarded(data: bytes) -> None:
        one(data)
        calls[0] += 1
        if calls[0] % 2000 == 0 and (peak := _peak_rss_mb()) > limit_mb:
            raise MemoryError(f"peak RSS {peak:.0f} MB is over the cap of {limit_mb:.0f} MB")

    return guarded


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags]", file=sys.stderr)
        sys.exit(2)
    with atheris.instrument_imports(include=["kms", "hsm"]):
        seeds, one = TARGETS[argv[1]]()
    given = os.environ.get("ATHERIS_CORPUS_DIR")
    corpus = Path(given) if given else Path(tempfile.mkdtemp(prefix=f"atheris-{argv[1]}-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(seed)
    limit_mb = float(os.environ.get("ATHERIS_RSS_LIMIT_MB", "1024"))
    atheris.Setup([argv[0], "-rss_limit_mb=0", *argv[2:], str(corpus)],
                  _capped(one, limit_mb))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
