"""Generate tests/vectors/envelope/v1.json (run once; the committed file is the reference).

    .venv/bin/python -m tests.envelope.make_vectors

Key materials, data keys and message ids are fixed, so the blobs differ between runs only
in the keyring's random wrap nonce; tests check that the committed blobs decrypt and that
re-sealing with the recorded data key and message id reproduces them byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kms.envelope import format as envelope_format
from kms.envelope.context import context_digest, encode_context
from kms.envelope.testing import StaticAesKeyring

OUT = Path(__file__).resolve().parents[1] / "vectors" / "envelope" / "v1.json"


def _fixed(label: str, n: int = 32) -> bytes:
    return hashlib.sha256(label.encode()).digest()[:n]


KEYRINGS = {
    "static": {"alpha": [_fixed("alpha v1")], "beta": [_fixed("beta v1"), _fixed("beta v2")]},
    "xks:example": {"tenant-7.key_A": [_fixed("tenant-7 v1")]},
}

CASES = [
    # name, keyring id, key id, context, plaintext, frame size
    ("empty-plaintext-empty-context", "static", "alpha", {}, b"", 65536),
    ("short-with-context", "static", "alpha", {"tenant": "acme", "kind": "prompt"}, b"hi", 65536),
    (
        "unicode-context-sorted-by-utf8",
        "static",
        "alpha",
        {"z": "1", "Z": "2", "\u00e9": "\u00e8te", "a\U0001f600": "", "ab": "x"},
        b"The quick brown fox jumps over the lazy dog",
        65536,
    ),
    ("second-key-version", "static", "beta", {"tenant": "acme"}, bytes(range(100)), 65536),
    ("other-keyring", "xks:example", "tenant-7.key_A", {"a": "b"}, b"xks blob", 65536),
    ("framed-three-frames", "static", "alpha", {"t": "f"}, bytes(range(40)), 16),
    ("framed-exact-multiple", "static", "alpha", {}, bytes(range(32)), 16),
    ("plaintext-equals-frame-size", "static", "alpha", {}, bytes(range(16)), 16),
]


def main() -> None:
    keyrings = {kid: StaticAesKeyring(keys, keyring_id=kid) for kid, keys in KEYRINGS.items()}
    vectors = []
    for name, keyring_id, key_id, context, plaintext, frame_size in CASES:
        keyring = keyrings[keyring_id]
        data_key = _fixed(name + " data key")
        message_id = _fixed(name + " message id")
        digest = context_digest(context)
        aad = envelope_format.wrap_aad_prefix(keyring_id, key_id) + digest
        wrapped = keyring.wrap_data_key(key_id, data_key, aad)
        blob = envelope_format.seal(
            wrapped=wrapped,
            data_key=data_key,
            message_id=message_id,
            plaintext=plaintext,
            context_digest=digest,
            frame_size=frame_size,
        )
        vectors.append(
            {
                "name": name,
                "keyring_id": keyring_id,
                "key_id": key_id,
                "key_version": wrapped.key_version,
                "context": context,
                "context_encoding": encode_context(context).hex(),
                "context_digest": digest.hex(),
                "frame_size": frame_size,
                "framed": len(plaintext) > frame_size,
                "data_key": data_key.hex(),
                "message_id": message_id.hex(),
                "plaintext": plaintext.hex(),
                "blob": blob.hex(),
            }
        )
    document = {
        "format": "kms.envelope blob v1 (docs/envelope-format.md)",
        "note": "test-only key material for StaticAesKeyring; never use these keys",
        "keyrings": {
            kid: {key: [m.hex() for m in ms] for key, ms in keys.items()}
            for kid, keys in KEYRINGS.items()
        },
        "vectors": vectors,
    }
    OUT.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
