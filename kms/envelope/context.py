"""Canonical encoding of the encryption context (docs/envelope-format.md, "Context").

The context is a ``Mapping[str, str]`` that the caller supplies on encrypt *and* on
decrypt (it is not stored in the blob, like Tink's associated data). Its canonical
encoding, in the spirit of the AWS Encryption SDK's (sorted by the UTF-8 bytes of the key):

    u16 count, then per pair: u16 key length, key (UTF-8), u16 value length, value (UTF-8)

Only its SHA-256 digest enters the format: in the associated data of the key wrap, of
the payload, and in the data-key cache key.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping

from kms.errors import ValidationError

MAX_PAIRS = 64
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 4096
MAX_ENCODED_BYTES = 16384

_U16 = struct.Struct(">H")
EMPTY_CONTEXT_DIGEST = hashlib.sha256(_U16.pack(0)).digest()


def encode_context(context: Mapping[str, str]) -> bytes:
    """The canonical bytes of ``context``; raises ``ValidationError`` if it breaks a rule.

    Rules: keys and values are ``str`` (valid UTF-8 when encoded), keys are non-empty,
    at most 64 pairs, keys at most 256 and values at most 4096 UTF-8 bytes, 16 KiB total.
    """
    if not isinstance(context, Mapping):
        raise ValidationError("encryption context must be a mapping of str to str")
    if len(context) > MAX_PAIRS:
        raise ValidationError(f"encryption context has more than {MAX_PAIRS} pairs")
    pairs: list[tuple[bytes, bytes]] = []
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError("encryption context keys and values must be str")
        try:
            key_bytes = key.encode()
            value_bytes = value.encode()
        except UnicodeEncodeError:
            raise ValidationError("encryption context must be valid Unicode text") from None
        if not 0 < len(key_bytes) <= MAX_KEY_BYTES:
            raise ValidationError(f"encryption context keys must be 1-{MAX_KEY_BYTES} bytes")
        if len(value_bytes) > MAX_VALUE_BYTES:
            raise ValidationError(
                f"encryption context values must be at most {MAX_VALUE_BYTES} bytes"
            )
        pairs.append((key_bytes, value_bytes))
    pairs.sort()  # keys are unique, so this sorts by the UTF-8 key bytes alone
    parts = [_U16.pack(len(pairs))]
    for key_bytes, value_bytes in pairs:
        parts += (_U16.pack(len(key_bytes)), key_bytes, _U16.pack(len(value_bytes)), value_bytes)
    encoded = b"".join(parts)
    if len(encoded) > MAX_ENCODED_BYTES:
        raise ValidationError(f"encryption context encodes to more than {MAX_ENCODED_BYTES} bytes")
    return encoded


# Digests of recently seen small contexts (applications reuse a handful: tenant, purpose),
# keyed by the pairs in the caller's order. Only pairs of exact ``str`` that passed
# encode_context are stored; bounded in entries and in size per entry.
_MEMO: dict[tuple[tuple[str, str], ...], bytes] = {}
_MEMO_ENTRIES = 1024
_MEMO_MAX_ENCODED = 512


def context_digest(context: Mapping[str, str]) -> bytes:
    """SHA-256 of :func:`encode_context` (32 bytes): what the blob format binds."""
    if not context and isinstance(context, Mapping):
        return EMPTY_CONTEXT_DIGEST
    try:
        memo_key: tuple[tuple[str, str], ...] | None = tuple(context.items())
        cached = _MEMO.get(memo_key)  # type: ignore[arg-type]
    except (AttributeError, TypeError):  # not a mapping, or unhashable values: no memo
        memo_key, cached = None, None
    if cached is not None:
        return cached
    encoded = encode_context(context)  # validates (raises ValidationError)
    digest = hashlib.sha256(encoded).digest()
    if (memo_key is not None and len(encoded) <= _MEMO_MAX_ENCODED
            and all(type(k) is str and type(v) is str for k, v in memo_key)):
        if len(_MEMO) >= _MEMO_ENTRIES:
            _MEMO.clear()
        _MEMO[memo_key] = digest
    return digest
