"""The local keyring for :mod:`kms.envelope`: data keys wrapped in-process by the key
service (same HSM, same lifecycle checks, no HTTP). For applications that run inside the
KMS process, and for the benchmark's "ours through the HSM" rows.

Wrapped form: ``iv(12) || tag(16) || ciphertext``; the key version is the blob's own field
and is bound into the HSM AAD by the key service, with the envelope's keyring AAD.
"""

from __future__ import annotations

from hsm import GcmCiphertext
from kms.audit.event import AuditEvent, AuditSink, context_hash
from kms.audit.record import Actor, Operation, Outcome
from kms.envelope.keyring import WrappedKey
from kms.errors import InvalidCiphertextError
from kms.keys.service import KeyService

IV, TAG = 12, 16


class LocalKeyring:
    def __init__(self, keys: KeyService, actor: Actor, *, audit: AuditSink | None = None,
                 keyring_id: str = "local") -> None:
        self.keys = keys
        self.actor = actor
        self.audit = audit
        self.keyring_id = keyring_id

    def wrap_data_key(self, key_id: str, data_key: bytes, aad: bytes) -> WrappedKey:
        enc = self.keys.encrypt(key_id, data_key, aad)
        self._record(Operation.ENVELOPE_ENCRYPT, key_id, enc.version, aad)
        ct = enc.ciphertext
        return WrappedKey(self.keyring_id, key_id, enc.version, ct.iv + ct.tag + ct.ciphertext)

    def unwrap_data_key(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        data = wrapped.wrapped
        if wrapped.keyring_id != self.keyring_id or len(data) < IV + TAG:
            raise InvalidCiphertextError(
                "ciphertext is invalid or does not match this key and context")
        ct = GcmCiphertext(data[:IV], data[IV + TAG:], data[IV:IV + TAG])
        key = self.keys.decrypt(wrapped.key_id, wrapped.key_version, ct, aad)
        self._record(Operation.ENVELOPE_DECRYPT, wrapped.key_id, wrapped.key_version, aad)
        return key

    def _record(self, op: Operation, key_id: str, version: int, aad: bytes) -> None:
        if self.audit is not None:
            self.audit.append(AuditEvent(op=op, outcome=Outcome.OK, actor=self.actor,
                                         key_id=key_id, key_version=version,
                                         context_hash=context_hash(aad)))
