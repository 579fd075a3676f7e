"""C2SP tlog-checkpoint bodies in C2SP signed notes, ECDSA P-256 (signature type 0x02)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.audit import merkle
from kms.audit.checkpoint import (
    Checkpoint,
    format_checkpoint,
    key_id,
    key_id_from_pem,
    load_public_key_pem,
    parse_checkpoint,
    parse_note,
    sign_note,
    verifier_key,
    verify_note,
)
from kms.audit.errors import NoteFormatError, NoteSignatureError

from .synthetic import Signer

VEC = json.loads(
    (Path(__file__).parents[1] / "vectors" / "audit" / "records_and_note.json").read_text()
)
NAME = "kms.example/audit"


def test_committed_note_verifies() -> None:
    key = load_public_key_pem(VEC["public_key_pem"].encode())
    cp = verify_note(VEC["note"], key, NAME, origin=NAME)
    assert cp.size == 2 and cp.root.hex() == VEC["root"]
    assert cp.time == "2025-01-31T12:00:02.000000Z"
    assert format_checkpoint(cp) == VEC["checkpoint_body"]
    leaves = [bytes.fromhex(r["leaf_hash"]) for r in VEC["records"]]
    assert merkle.root_of(leaves) == cp.root


def test_key_id_is_sha256_of_spki_der() -> None:
    pem = VEC["public_key_pem"].encode()
    key = load_public_key_pem(pem)
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key_id(key) == hashlib.sha256(der).digest()[:4] == key_id_from_pem(pem)
    assert key_id(key).hex() == VEC["key_id"]
    name, kid, blob = verifier_key(NAME, key).split("+", 2)
    assert (name, kid) == (NAME, VEC["key_id"])
    assert base64.b64decode(blob) == b"\x02" + der


def test_body_format_is_exact() -> None:
    cp = Checkpoint("example.com/log", 20852163, bytes(range(32)))
    body = format_checkpoint(cp)
    root_b64 = base64.b64encode(bytes(range(32))).decode()
    assert body == "example.com/log\n20852163\n" + root_b64 + "\n"
    assert parse_checkpoint(body) == cp


@pytest.mark.parametrize(
    "body",
    [
        "o\n01\n" + base64.b64encode(b"\0" * 32).decode() + "\n",  # leading zero
        "o\n-1\n" + base64.b64encode(b"\0" * 32).decode() + "\n",
        "o\n1\n" + base64.b64encode(b"\0" * 31).decode() + "\n",  # short root
        "o\n1\n" + base64.b64encode(b"\0" * 32).decode().rstrip("=") + "\n",  # unpadded
        "o\n1\n" + base64.b64encode(b"\0" * 32).decode(),  # no final newline
        "\n1\n" + base64.b64encode(b"\0" * 32).decode() + "\n",  # empty origin
        "o\n1\n",
        "o\n1\n" + base64.b64encode(b"\0" * 32).decode() + "\n\n",  # empty extension line
        "o\n" + "9" * 21 + "\n" + base64.b64encode(b"\0" * 32).decode() + "\n",
    ],
)
def test_bad_bodies_are_rejected(body: str) -> None:
    with pytest.raises(NoteFormatError):
        parse_checkpoint(body)


def test_sign_and_verify_round_trip_and_foreign_signatures_are_ignored() -> None:
    signer, other = Signer.generate(), Signer.generate()
    note = signer.note(5, b"\x11" * 32, key_name=NAME, origin=NAME)
    assert verify_note(note, signer.public_key, NAME).size == 5
    # A co-signature from an unknown key is ignored (c2sp signed-note).
    extra = other.note(5, b"\x11" * 32, key_name="witness.example", origin=NAME)
    cosigned = note + extra.split("\n\n")[1]
    assert len(parse_note(cosigned).signatures) == 2
    assert verify_note(cosigned, signer.public_key, NAME).size == 5
    with pytest.raises(NoteSignatureError):
        verify_note(note, other.public_key, NAME)  # wrong key: no matching key id
    with pytest.raises(NoteSignatureError):
        verify_note(note, signer.public_key, "someone.else")
    with pytest.raises(NoteFormatError):
        verify_note(note, signer.public_key, NAME, origin="other.origin")


def test_tampered_notes_fail() -> None:
    signer = Signer.generate()
    note = signer.note(5, b"\x11" * 32, key_name=NAME, origin=NAME)
    text, sigline = note.split("\n\n")
    with pytest.raises(NoteSignatureError):
        verify_note(text.replace("\n5\n", "\n6\n") + "\n\n" + sigline, signer.public_key, NAME)
    # Same key id, different signature bytes.
    blob = base64.b64decode(sigline.split(" ")[2])
    forged = blob[:4] + signer.sign(b"something else")
    bad = text + "\n\n\u2014 " + NAME + " " + base64.b64encode(forged).decode() + "\n"
    with pytest.raises(NoteSignatureError):
        verify_note(bad, signer.public_key, NAME)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: n.replace("\u2014", "--"),
        lambda n: n.replace("\n\n", "\n"),
        lambda n: n.rstrip("\n"),
        lambda n: n.replace("\n\n", "\n\x01\n\n"),
        lambda n: n + "x" * 20000,
        lambda n: n.replace(" ", "  ", 1),
        lambda n: n[: n.rindex(" ") + 1] + "!!!!\n",
    ],
)
def test_malformed_notes_are_rejected(mangle) -> None:  # type: ignore[no-untyped-def]
    signer = Signer.generate()
    note = signer.note(5, b"\x11" * 32, key_name=NAME, origin=NAME)
    with pytest.raises((NoteFormatError, NoteSignatureError)):
        verify_note(mangle(note), signer.public_key, NAME)


def test_signer_must_return_der() -> None:
    signer = Signer.generate()
    body = format_checkpoint(Checkpoint(NAME, 1, b"\0" * 32))
    with pytest.raises(NoteFormatError):
        sign_note(body, NAME, key_id(signer.public_key), lambda m: b"\x00" * 64)
    with pytest.raises(NoteFormatError):
        sign_note(body, "bad name", key_id(signer.public_key), signer.sign)


_SIGNER = Signer.generate()


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 2**63),
    root=st.binary(min_size=32, max_size=32),
    origin=st.from_regex(r"[a-z0-9.]{1,20}/[a-z0-9]{1,10}", fullmatch=True),
)
def test_note_round_trip_property(size: int, root: bytes, origin: str) -> None:
    note = _SIGNER.note(size, root, key_name=origin, origin=origin)
    assert verify_note(note, _SIGNER.public_key, origin) == Checkpoint(origin, size, root)
    raw = note.encode()
    for i in range(0, len(raw), 7):  # truncations never verify
        with pytest.raises((NoteFormatError, NoteSignatureError)):
            verify_note(raw[:i], _SIGNER.public_key, origin)


def test_public_key_with_a_damaged_algorithm_oid_is_a_format_error() -> None:
    """Found by fuzzing the export: one flipped bit in the SPKI's algorithm OID made
    ``cryptography`` raise UnsupportedAlgorithm, which escaped the verifier."""
    der = base64.b64decode(b"".join(
        VEC["public_key_pem"].encode().strip().splitlines()[1:-1]))
    oid = bytes.fromhex("2a8648ce3d0201")  # id-ecPublicKey 1.2.840.10045.2.1
    at = der.index(oid)
    damaged = der[:at] + b"\x00" + der[at + 1:]  # 0.38.840.10045.2.1
    pem = (b"-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(damaged)
           + b"\n-----END PUBLIC KEY-----\n")
    with pytest.raises(NoteFormatError):
        load_public_key_pem(pem)
