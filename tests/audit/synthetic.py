"""Synthetic audit logs and exports for tests (software P-256 key, no HSM, no database)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from kms.audit import merkle
from kms.audit.checkpoint import Checkpoint, format_checkpoint, key_id, public_key_pem, sign_note
from kms.audit.export_format import write_export
from kms.audit.record import (
    OPERATIONS,
    Actor,
    ChainHead,
    RequestMetadata,
    build_record,
    encode,
    record_hash,
)

ORIGIN = "kms.test/audit"
KEY_NAME = ORIGIN
T0 = datetime(2025, 1, 1, tzinfo=UTC)
_OPS = sorted(OPERATIONS)


@dataclass
class Signer:
    """Software stand-in for the HSM-held checkpoint key."""

    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> Signer:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    @property
    def pem(self) -> bytes:
        return public_key_pem(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message, ec.ECDSA(hashes.SHA256()))

    def note(self, size: int, root: bytes, *, time: str | None = None,
             key_name: str = KEY_NAME, origin: str = ORIGIN) -> str:
        body = format_checkpoint(Checkpoint(origin=origin, size=size, root=root, time=time))
        return sign_note(body, key_name, key_id(self.public_key), self.sign)


def make_records(count: int, *, start: int = 0, head: ChainHead | None = None,
                 salt: str = "") -> Iterator[bytes]:
    """Canonical bytes of ``count`` varied records chained after ``head``."""
    for i in range(start, start + count):
        op = _OPS[i % len(_OPS)]
        outcome = ("ok", "ok", "ok", "error", "denied")[i % 5]
        xks = op.startswith("xks.")
        rec = build_record(
            head,
            time=T0 + timedelta(microseconds=1_000_003 * i),
            op=op,
            outcome=outcome,
            actor=Actor(kind="xks_credential" if xks else "admin_token", id=f"actor-{i % 7}"),
            key_id=f"key-{i % 13}{salt}",
            key_version=1 + i % 3,
            store="default",
            error={"ok": None, "error": "ValidationException",
                   "denied": "AccessDeniedException"}[outcome],
            request=RequestMetadata(kmsRequestId=f"req-{i}", kmsOperation="Encrypt",
                                    awsPrincipalArn="arn:aws:iam::111122223333:role/app")
            if xks else None,
            context_hash=hashlib.sha256(f"ctx{i}".encode()).hexdigest() if xks else None,
            latency_us=100 + i % 1000,
            detail={"reason": "policy"} if outcome == "denied" else {},
        )
        data = encode(rec)
        head = ChainHead(seq=rec.seq, record_hash=record_hash(data))
        yield data


def notes_for(records: list[bytes], signer: Signer, every: int) -> list[str]:
    """Signed checkpoints at every multiple of ``every`` (and none beyond the records)."""
    notes = []
    cr = merkle.CompactRange()
    for i, data in enumerate(records, start=1):
        cr.append(merkle.leaf_hash(data))
        if i % every == 0:
            notes.append(signer.note(i, cr.root(), time=f"2025-01-02T00:00:{i % 60:02d}.000000Z"))
    return notes


def build_export(out: Path, records: list[bytes], notes: list[str], signer: Signer) -> Path:
    write_export(out, records, notes, signer.pem, ORIGIN, KEY_NAME)
    return out
