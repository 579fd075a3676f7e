"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes (pure).

Body (c2sp.org/tlog-checkpoint)::

    <origin>\\n<tree size, decimal, no leading zeros>\\n<base64 RFC 6962 root>\\n[extension lines]

We add at most one extension line, ``time <RFC 3339 UTC with microseconds>``: the spec
allows opaque extension lines (NOT RECOMMENDED, because monitors cannot audit them) and
the design requires a signed time on every checkpoint. The line is covered by the note
signature; verifiers that do not know it can ignore it.

Signed note (c2sp.org/signed-note)::

    <body>\\n— <key name> <base64(key id (4 bytes) || signature)>\\n

Signature type ``0x02`` of the signed-note spec ("ECDSA signatures as implemented by
github.com/transparency-dev/witness"): ECDSA over NIST P-256 with SHA-256 of the note
text (the body, including its final newline), signature DER-encoded (ASN.1
``Ecdsa-Sig-Value``). For this type the key id is the first 4 bytes of SHA-256 of the
DER SubjectPublicKeyInfo of the public key (without the key name), which is what
transparency-dev/witness and Sigstore Rekor compute. The matching verifier-key string is
``<name>+<hex key id>+<base64(0x02 || DER SPKI)>`` (:func:`verifier_key`).

Signing is injected (``sign(message) -> DER signature``) so the private key can stay in
the HSM; verification uses a ``cryptography`` P-256 public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from kms.audit.errors import NoteFormatError, NoteSignatureError
from kms.audit.merkle import HASH_SIZE

__all__ = [
    "MAX_NOTE_BYTES",
    "SIGNATURE_TYPE_ECDSA",
    "Checkpoint",
    "Note",
    "NoteSignature",
    "Signer",
    "format_checkpoint",
    "key_id",
    "key_id_from_pem",
    "load_public_key_pem",
    "parse_checkpoint",
    "parse_note",
    "public_key_pem",
    "sign_note",
    "verifier_key",
    "verify_note",
]

#: Signed-note signature type byte for ECDSA (c2sp.org/signed-note, "Signature types").
SIGNATURE_TYPE_ECDSA = 0x02
#: Caps, checked before any slicing.
MAX_NOTE_BYTES = 16 * 1024
MAX_SIGNATURES = 32
MAX_ORIGIN_CHARS = 256
MAX_EXTENSION_LINES = 8
MAX_SIZE_DIGITS = 20
#: DER ECDSA P-256 signatures are at most 72 bytes; allow some slack, never unbounded.
MAX_SIGNATURE_BYTES = 256
TIME_EXTENSION_PREFIX = "time "

_EM_DASH = "\u2014"
_SIG_PREFIX = _EM_DASH + " "
_TIME_RE = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_SIZE_RE = re.compile(r"\A(0|[1-9][0-9]*)\Z")
_B64_RE = re.compile(r"\A[A-Za-z0-9+/]*={0,2}\Z")

Signer = Callable[[bytes], bytes]
"""``sign(message) -> DER ECDSA P-256/SHA-256 signature`` over the message bytes."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: origin, size and RFC 6962 root, plus the optional signed time."""

    origin: str
    size: int
    root: bytes
    time: str | None = None

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if not 0 < len(self.origin) <= MAX_ORIGIN_CHARS:
            raise NoteFormatError("origin must be 1..256 characters")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise NoteFormatError("tree size must be a non-negative integer")
        if len(str(self.size)) > MAX_SIZE_DIGITS:
            raise NoteFormatError("tree size too large")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise NoteFormatError("root must be 32 bytes")
        if self.time is not None and not _TIME_RE.match(self.time):
            raise NoteFormatError("checkpoint time must be RFC 3339 UTC with microseconds")


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id, raw signature bytes."""

    key_name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed (not yet verified) signed note."""

    text: str
    signatures: tuple[NoteSignature, ...]


def _check_line(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise NoteFormatError(f"{what} must be a non-empty string")
    if any(ord(c) < 0x20 for c in value):
        raise NoteFormatError(f"{what} must not contain control characters or newlines")


def _check_key_name(name: str) -> None:
    _check_line(name, "key name")
    if len(name) > MAX_ORIGIN_CHARS:
        raise NoteFormatError("key name too long")
    if "+" in name or any(c.isspace() for c in name):
        raise NoteFormatError("key name must not contain spaces or '+'")


def _b64decode_strict(text: str, what: str) -> bytes:
    if not _B64_RE.match(text) or len(text) % 4:
        raise NoteFormatError(f"{what} is not standard padded base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteFormatError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteFormatError(f"{what} is not canonical base64")
    return raw


# --- checkpoint body ---------------------------------------------------------------------


def format_checkpoint(checkpoint: Checkpoint) -> str:
    """The note text (body) of a checkpoint, ending in a newline."""
    lines = [checkpoint.origin, str(checkpoint.size), base64.b64encode(checkpoint.root).decode()]
    if checkpoint.time is not None:
        lines.append(TIME_EXTENSION_PREFIX + checkpoint.time)
    return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Strictly parse a checkpoint body (the note text)."""
    if len(text) > MAX_NOTE_BYTES or not text.endswith("\n"):
        raise NoteFormatError("checkpoint text must end with a newline and be small")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or len(lines) > 3 + MAX_EXTENSION_LINES:
        raise NoteFormatError("checkpoint must have 3 lines plus a few extension lines")
    if any(not line for line in lines):
        raise NoteFormatError("checkpoint lines must be non-empty")
    origin, size_text, root_text, *extensions = lines
    if len(size_text) > MAX_SIZE_DIGITS or not _SIZE_RE.match(size_text):
        raise NoteFormatError("tree size must be decimal without leading zeros")
    root = _b64decode_strict(root_text, "root hash")
    time: str | None = None
    for ext in extensions:
        if ext.startswith(TIME_EXTENSION_PREFIX):
            if time is not None:
                raise NoteFormatError("duplicate time extension line")
            time = ext[len(TIME_EXTENSION_PREFIX) :]
    return Checkpoint(origin=origin, size=int(size_text), root=root, time=time)


# --- keys --------------------------------------------------------------------------------


def _spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _require_p256(public_key: object) -> ec.EllipticCurvePublicKey:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise NoteFormatError("checkpoint keys must be EC P-256 public keys")
    return public_key


def load_public_key_pem(pem: bytes) -> ec.EllipticCurvePublicKey:
    """Load an EC P-256 SubjectPublicKeyInfo PEM."""
    if len(pem) > MAX_NOTE_BYTES:
        raise NoteFormatError("public key PEM too large")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # e.g. a damaged algorithm OID
        raise NoteFormatError("not a PEM public key") from None
    return _require_p256(key)


def public_key_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of a P-256 public key."""
    return _require_p256(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """Signed-note key id for signature type 0x02: SHA-256(DER SPKI)[:4]."""
    return hashlib.sha256(_spki_der(_require_p256(public_key))).digest()[:4]


def key_id_from_pem(pem: bytes) -> bytes:
    """Key id of a PEM public key (see :func:`key_id`)."""
    return key_id(load_public_key_pem(pem))


def verifier_key(key_name: str, public_key: ec.EllipticCurvePublicKey) -> str:
    """Verifier key string ``name+hexid+base64(0x02||SPKI)`` (transparency-dev format)."""
    _check_key_name(key_name)
    blob = bytes([SIGNATURE_TYPE_ECDSA]) + _spki_der(_require_p256(public_key))
    return f"{key_name}+{key_id(public_key).hex()}+{base64.b64encode(blob).decode()}"


# --- signed notes ------------------------------------------------------------------------


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteFormatError("note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteFormatError("note must not contain control characters other than newline")


def sign_note(text: str, key_name: str, key_id_bytes: bytes, sign: Signer) -> str:
    """Sign note text with the injected signer and return the signed note."""
    _check_key_name(key_name)
    _check_note_text(text)
    if "\n\n" in text:
        raise NoteFormatError("note text must not contain blank lines")
    if len(key_id_bytes) != 4:
        raise NoteFormatError("key id must be 4 bytes")
    signature = sign(text.encode("utf-8"))
    if not isinstance(signature, bytes) or not 8 <= len(signature) <= MAX_SIGNATURE_BYTES:
        raise NoteFormatError("signer returned no DER signature")
    try:
        decode_dss_signature(signature)
    except ValueError:
        raise NoteFormatError("signer must return a DER-encoded ECDSA signature") from None
    blob = base64.b64encode(key_id_bytes + signature).decode("ascii")
    note = f"{text}\n{_SIG_PREFIX}{key_name} {blob}\n"
    if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise NoteFormatError("signed note too large")
    return note


def parse_note(note: str | bytes) -> Note:
    """Strictly split a signed note into its text and signature lines (no verification)."""
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise NoteFormatError("signed note too large")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteFormatError("signed note is not UTF-8") from None
    if len(note) > MAX_NOTE_BYTES or len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise NoteFormatError("signed note too large")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteFormatError("signed note is not valid UTF-8") from None
    _check_note_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("signed note has no blank line before its signatures")
    text = note[: split + 1]
    sig_block = note[split + 2 :]
    sig_lines = sig_block[:-1].split("\n") if sig_block else []
    if not sig_lines or len(sig_lines) > MAX_SIGNATURES:
        raise NoteFormatError("signed note needs 1..32 signature lines")
    signatures: list[NoteSignature] = []
    for line in sig_lines:
        if not line.startswith(_SIG_PREFIX):
            raise NoteFormatError("signature line must start with an em dash and a space")
        parts = line[len(_SIG_PREFIX) :].split(" ")
        if len(parts) != 2:
            raise NoteFormatError("signature line must be '— <name> <base64>'")
        name, blob_text = parts
        _check_key_name(name)
        if len(blob_text) > 4 * ((4 + MAX_SIGNATURE_BYTES + 2) // 3):
            raise NoteFormatError("signature too long")
        blob = _b64decode_strict(blob_text, "signature")
        if len(blob) < 5:
            raise NoteFormatError("signature too short")
        signatures.append(NoteSignature(key_name=name, key_id=blob[:4], signature=blob[4:]))
    return Note(text=text, signatures=tuple(signatures))


def verify_note(
    note: str | bytes,
    public_key: ec.EllipticCurvePublicKey,
    key_name: str,
    *,
    origin: str | None = None,
) -> Checkpoint:
    """Verify a signed checkpoint note and return its checkpoint.

    Signature lines from other keys (other name or id) are ignored, as the spec requires.
    At least one line must match ``(key_name, key_id(public_key))`` and every matching line
    must verify, else :class:`NoteSignatureError`. Malformed input raises
    :class:`NoteFormatError`. If ``origin`` is given, the checkpoint's origin must equal it.
    """
    _check_key_name(key_name)
    public_key = _require_p256(public_key)
    parsed = parse_note(note)
    wanted_id = key_id(public_key)
    matching = [s for s in parsed.signatures if s.key_name == key_name and s.key_id == wanted_id]
    if not matching:
        raise NoteSignatureError(f"no signature from key {key_name}+{wanted_id.hex()}")
    message = parsed.text.encode("utf-8")
    for sig in matching:
        try:
            public_key.verify(sig.signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise NoteSignatureError("checkpoint signature does not verify") from None
    checkpoint = parse_checkpoint(parsed.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteFormatError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint
