"""Every modification of a blob is rejected with the one opaque error."""

from __future__ import annotations

import struct

import pytest

from kms.envelope import EnvelopeEncryptor, parse_header
from kms.envelope.format import INVALID_CIPHERTEXT, TAG_LEN
from kms.envelope.testing import StaticAesKeyring
from kms.errors import InvalidCiphertextError

CONTEXT = {"tenant": "acme", "kind": "prompt"}


def _rejected(encryptor: EnvelopeEncryptor, blob: bytes) -> bool:
    try:
        encryptor.decrypt(blob, CONTEXT)
    except InvalidCiphertextError as error:
        assert str(error) == INVALID_CIPHERTEXT
        return True
    return False


@pytest.mark.parametrize("frame_size", [65536, 32], ids=["single", "framed"])
def test_every_bit_flip_is_rejected(encryptor: EnvelopeEncryptor, frame_size: int) -> None:
    tamper_target = EnvelopeEncryptor(encryptor._keyring, "key-a", frame_size=frame_size)
    blob = tamper_target.encrypt(bytes(range(100)), CONTEXT)
    assert tamper_target.decrypt(blob, CONTEXT) == bytes(range(100))
    accepted = []
    for bit in range(len(blob) * 8):
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        if not _rejected(tamper_target, bytes(flipped)):
            accepted.append(bit)
    assert accepted == []


@pytest.mark.parametrize("frame_size", [65536, 32], ids=["single", "framed"])
def test_every_truncation_and_extension_is_rejected(
    keyring: StaticAesKeyring, frame_size: int
) -> None:
    encryptor = EnvelopeEncryptor(keyring, "key-a", frame_size=frame_size)
    blob = encryptor.encrypt(bytes(range(100)), CONTEXT)
    assert all(_rejected(encryptor, blob[:n]) for n in range(len(blob)))
    assert _rejected(encryptor, blob + b"\x00")
    assert _rejected(encryptor, blob + blob)


def test_parse_header_rejects_garbage_opaquely() -> None:
    for blob in (
        b"",
        b"KMSE",
        b"KMSE\x02\x01\x00",
        b"\x00" * 200,
        b"KMSE\x01\x01\x02" + b"\x01" * 200,
    ):
        with pytest.raises(InvalidCiphertextError, match=f"^{INVALID_CIPHERTEXT}$"):
            parse_header(blob)


# --- frame-level attacks, with the stored sequence numbers kept consistent ----------------

FRAME = 16
HEAD = struct.Struct(">IB")


def _split_frames(blob: bytes) -> tuple[bytes, list[bytes]]:
    """(header, ciphertext||tag of each frame); the blob has full frames + a final frame."""
    header = parse_header(blob)
    pos = header.header_length
    bodies = []
    while True:
        _, final = HEAD.unpack_from(blob, pos)
        pos += HEAD.size
        length = FRAME
        if final:
            (length,) = struct.unpack_from(">I", blob, pos)
            pos += 4
        bodies.append(blob[pos : pos + length + TAG_LEN])
        pos += length + TAG_LEN
        if final:
            assert pos == len(blob)
            return blob[: header.header_length], bodies


def _join_frames(header: bytes, bodies: list[bytes], final_length: int | None = None) -> bytes:
    """Re-frame ``bodies`` with fresh consecutive sequence numbers; the last one is final."""
    parts = [header]
    for seq, body in enumerate(bodies, start=1):
        if seq == len(bodies):
            length = len(body) - TAG_LEN if final_length is None else final_length
            parts.append(struct.pack(">IBI", seq, 1, length))
        else:
            parts.append(HEAD.pack(seq, 0))
        parts.append(body)
    return b"".join(parts)


@pytest.fixture
def framed() -> tuple[EnvelopeEncryptor, bytes, bytes]:
    keyring = StaticAesKeyring({"key-a": [bytes(32)]})
    encryptor = EnvelopeEncryptor(keyring, "key-a", frame_size=FRAME)
    plaintext = bytes(range(FRAME * 3 + 5))  # frames of 16, 16, 16 and a final frame of 5
    return encryptor, plaintext, encryptor.encrypt(plaintext, CONTEXT)


def test_reframing_helpers_reproduce_the_blob(
    framed: tuple[EnvelopeEncryptor, bytes, bytes],
) -> None:
    encryptor, plaintext, blob = framed
    header, bodies = _split_frames(blob)
    assert len(bodies) == 4
    assert _join_frames(header, bodies) == blob
    assert encryptor.decrypt(blob, CONTEXT) == plaintext


def test_frame_reorder_is_detected(framed: tuple[EnvelopeEncryptor, bytes, bytes]) -> None:
    encryptor, _, blob = framed
    header, b = _split_frames(blob)
    assert _rejected(encryptor, _join_frames(header, [b[1], b[0], b[2], b[3]]))


def test_frame_drop_is_detected(framed: tuple[EnvelopeEncryptor, bytes, bytes]) -> None:
    encryptor, _, blob = framed
    header, b = _split_frames(blob)
    assert _rejected(encryptor, _join_frames(header, [b[0], b[2], b[3]]))


def test_frame_duplicate_is_detected(framed: tuple[EnvelopeEncryptor, bytes, bytes]) -> None:
    encryptor, _, blob = framed
    header, b = _split_frames(blob)
    assert _rejected(encryptor, _join_frames(header, [b[0], b[0], b[1], b[2], b[3]]))


def test_truncation_at_a_frame_boundary_is_detected(
    framed: tuple[EnvelopeEncryptor, bytes, bytes],
) -> None:
    # Drop the final frame and mark the last full frame as final: well-formed, but its
    # tag was computed with final = 0, so authentication fails.
    encryptor, _, blob = framed
    header, b = _split_frames(blob)
    assert _rejected(encryptor, _join_frames(header, b[:3]))
    assert _rejected(encryptor, _join_frames(header, b[:1]))


def test_frames_cannot_move_between_blobs(framed: tuple[EnvelopeEncryptor, bytes, bytes]) -> None:
    encryptor, plaintext, blob = framed
    header, b = _split_frames(blob)
    _, other = _split_frames(encryptor.encrypt(plaintext, CONTEXT))
    assert _rejected(encryptor, _join_frames(header, [b[0], other[1], b[2], b[3]]))
