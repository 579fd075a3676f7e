"""The HSM worker process's messages (inside kms.framing's length-prefixed frames).

A frame holds items; an item is a one-byte code, a one-byte field count and the fields,
each a 4-byte big-endian length and its bytes. No pickle in either direction: neither
process runs code that the other one sent.

* A batch of calls (parent -> child): code 1 ``GcmEncrypt`` (label, plaintext, aad) or
  code 2 ``GcmDecrypt`` (label, iv, ciphertext, tag, aad).
* Its answer (child -> parent): one item per call, in order. Code 0 is a result (an
  encrypt's iv, ciphertext and tag; a decrypt's plaintext); the others are the error the
  HSM layer raised (:data:`ERRORS`), without a message. Every answer's last field is the
  time the worker's HSM call took, in microseconds (4 bytes, big-endian), for the
  server's ``kms_hsm_call_duration_seconds``.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from hsm import (
    GcmCiphertext,
    HsmError,
    HsmUnavailable,
    InvalidCiphertext,
    KeyNotFound,
    PermissionDenied,
)
from hsm.calls import GcmCall, GcmDecrypt, GcmEncrypt, GcmResult

FAILED = b'["failed"]'  # the child's first message when it cannot open the token
ENCRYPT, DECRYPT = 1, 2
OK = 0
ERRORS: dict[int, type[HsmError]] = {1: InvalidCiphertext, 2: KeyNotFound,
                                     3: PermissionDenied, 4: HsmUnavailable, 5: HsmError}
_ITEM = struct.Struct("!BB")
_LEN = struct.Struct("!I")
_MICROS = struct.Struct("!I")
_MAX_MICROS = 0xFFFFFFFF


class Answer(NamedTuple):
    """One call's outcome in the worker and how long its HSM call took there."""

    outcome: GcmResult | HsmError
    seconds: float


class CodecError(ValueError):
    """A message that does not follow this protocol."""


def _pack(items: list[tuple[int, tuple[bytes, ...]]]) -> bytes:
    out = bytearray()
    for code, fields in items:
        out += _ITEM.pack(code, len(fields))
        for f in fields:
            out += _LEN.pack(len(f))
            out += f
    return bytes(out)


def _unpack(payload: bytes) -> list[tuple[int, list[bytes]]]:
    items: list[tuple[int, list[bytes]]] = []
    view, pos, end = memoryview(payload), 0, len(payload)
    try:
        while pos < end:
            code, count = _ITEM.unpack_from(payload, pos)
            pos += 2
            fields = []
            for _ in range(count):
                (n,) = _LEN.unpack_from(payload, pos)
                pos += 4
                if pos + n > end:
                    raise CodecError("a field runs past the message")
                fields.append(bytes(view[pos:pos + n]))
                pos += n
            items.append((code, fields))
    except struct.error:
        raise CodecError("a truncated item") from None
    return items


def encode_calls(calls: list[GcmCall]) -> bytes:
    items: list[tuple[int, tuple[bytes, ...]]] = []
    for c in calls:
        if isinstance(c, GcmEncrypt):
            items.append((ENCRYPT, (c.label.encode(), c.plaintext, c.aad)))
        else:
            items.append((DECRYPT, (c.label.encode(), c.iv, c.ciphertext, c.tag, c.aad)))
    return _pack(items)


def decode_calls(payload: bytes) -> list[GcmCall]:
    calls: list[GcmCall] = []
    for code, f in _unpack(payload):
        if code == ENCRYPT and len(f) == 3:
            calls.append(GcmEncrypt(f[0].decode(), f[1], f[2]))
        elif code == DECRYPT and len(f) == 5:
            calls.append(GcmDecrypt(f[0].decode(), f[1], f[2], f[3], f[4]))
        else:
            raise CodecError("an unknown call")
    return calls


def error_code(exc: HsmError) -> int:
    """The code of the most specific class in :data:`ERRORS` that ``exc`` is."""
    for code in (1, 2, 3):
        if isinstance(exc, ERRORS[code]):
            return code
    return 4 if isinstance(exc, HsmUnavailable) else 5


def encode_results(answers: list[Answer]) -> bytes:
    items: list[tuple[int, tuple[bytes, ...]]] = []
    for r, seconds in answers:
        took = _MICROS.pack(min(_MAX_MICROS, max(0, round(seconds * 1e6))))
        if isinstance(r, GcmCiphertext):
            items.append((OK, (r.iv, r.ciphertext, r.tag, took)))
        elif isinstance(r, bytes):
            items.append((OK, (r, took)))
        else:
            items.append((error_code(r), (took,)))
    return _pack(items)


def decode_results(payload: bytes, calls: list[GcmCall]) -> list[Answer]:
    """The answers to ``calls`` (CodecError if they do not match them one for one)."""
    items = _unpack(payload)
    if len(items) != len(calls):
        raise CodecError("not one answer per call")
    out: list[Answer] = []
    for (code, f), call in zip(items, calls, strict=True):
        if not f or len(f[-1]) != _MICROS.size:
            raise CodecError("an answer without its duration")
        seconds = _MICROS.unpack(f.pop())[0] / 1e6
        if code == OK:
            if isinstance(call, GcmEncrypt) and len(f) == 3:
                out.append(Answer(GcmCiphertext(f[0], f[1], f[2]), seconds))
            elif isinstance(call, GcmDecrypt) and len(f) == 1:
                out.append(Answer(f[0], seconds))
            else:
                raise CodecError("a result of the wrong shape")
        elif code in ERRORS and not f:
            out.append(Answer(ERRORS[code]("the HSM worker process reported an error"),
                              seconds))
        else:
            raise CodecError("an unknown answer")
    return out
