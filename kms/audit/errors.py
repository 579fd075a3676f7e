"""Errors of the audit log core (kms/audit/).

These are not client-facing KMS errors (see :mod:`kms.errors`): they are raised by the pure
audit formats and by the offline verifier. Functions whose result must not be ignored
(proof and signature verification) raise one of these instead of returning a bool.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base of every error raised by :mod:`kms.audit`."""


class InvalidProofError(AuditError):
    """A Merkle inclusion or consistency proof does not verify."""


class RecordFormatError(AuditError):
    """Bytes are not a valid audit record (malformed JSON, bad field, unknown op...)."""


class NonCanonicalRecordError(RecordFormatError):
    """A record parses but its bytes are not the RFC 8785 canonical encoding."""


class CheckpointError(AuditError):
    """Base of signed-note / checkpoint errors."""


class NoteFormatError(CheckpointError):
    """A signed note or a checkpoint body is malformed."""


class NoteSignatureError(CheckpointError):
    """A signed note carries no valid signature from the expected key."""


class ExportError(AuditError):
    """An export directory cannot be written or read at all (not a verification fault)."""
