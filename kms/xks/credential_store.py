"""XKS SigV4 credentials in the database, secrets sealed under an HSM key.

A secret is stored only as AES-256-GCM ciphertext made in the HSM under the credential key
(``kms-credentials``), with the access key id and store bound as AAD, so a row copied to
another credential or store does not open. Decrypted secrets are kept in process memory
(the HMAC needs them) only for the current state epoch: adding or removing a credential bumps
the epoch like a key state change, so a credential removed in any process is refused by
every process on its next request (SQLite: the epoch file; PostgreSQL: NOTIFY), without a
restart.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError

from hsm import GcmCiphertext, HsmError
from hsm.interface import Hsm
from hsm.types import GCM_IV_BYTES, GCM_TAG_BYTES
from kms.audit.event import AuditEvent, AuditSink
from kms.audit.record import Actor, Operation, Outcome
from kms.clock import Clock, iso
from kms.db import schema as t
from kms.db.engine import read_only
from kms.errors import ConflictError, DependencyTimeoutError, KeyNotFoundError
from kms.keys.registry import Registry
from kms.keys.service import translate_hsm_error
from kms.keys.state_cache import KeyStateCache
from kms.settings import CREDENTIAL_KEY_LABEL
from kms.xks.credentials import (
    Secret,
    generate_credential,
    validate_access_key_id,
    validate_secret_access_key,
)

MAX_CREDENTIALS_PER_STORE = 10


def _aad(store: str, access_key_id: str) -> bytes:
    return b"xks-credential-v1\x00" + store.encode() + b"\x00" + access_key_id.encode()


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    access_key_id: str
    store: str
    created_at: str


class CredentialStore:
    def __init__(self, registry: Registry, cache: KeyStateCache, hsm: Hsm, audit: AuditSink,
                 clock: Clock) -> None:
        self._registry = registry
        self._engine = registry.engine
        self._cache = cache
        self._hsm = hsm
        self._audit = audit
        self._clock = clock
        self._lock = threading.Lock()
        self._epoch = -1
        self._opened: dict[str, tuple[str, bytes] | None] = {}  # akid -> (store, secret)

    def add(self, store: str, access_key_id: str | None, secret: Secret | None,
            actor: Actor) -> tuple[str, Secret]:
        """Add a credential; generates the id and/or secret when not given."""
        gen_id, gen_secret = generate_credential()
        akid = validate_access_key_id(access_key_id) if access_key_id else gen_id
        sec = validate_secret_access_key(secret) if secret is not None else gen_secret
        try:
            ct = self._hsm.encrypt(CREDENTIAL_KEY_LABEL, sec.reveal_bytes(), _aad(store, akid))
        except HsmError as exc:
            raise translate_hsm_error(exc) from None
        sealed = ct.iv + ct.ciphertext + ct.tag
        try:
            with self._engine.begin() as conn:
                if conn.execute(select(t.key_stores.c.name)
                                .where(t.key_stores.c.name == store)).first() is None:
                    raise KeyNotFoundError(f"no key store named {store!r}")
                count = len(conn.execute(select(t.xks_credentials.c.access_key_id)
                                         .where(t.xks_credentials.c.store == store)).all())
                if count >= MAX_CREDENTIALS_PER_STORE:
                    raise ConflictError(f"a store has at most {MAX_CREDENTIALS_PER_STORE} "
                                        "credentials; remove one first")
                conn.execute(t.xks_credentials.insert().values(
                    access_key_id=akid, store=store, secret_sealed=sealed,
                    created_at=iso(self._clock())))
                epoch = self._registry.bump_epoch(conn)
        except IntegrityError:
            raise ConflictError("that access key id exists already") from None
        except OperationalError:
            raise DependencyTimeoutError("the database is unavailable") from None
        self._changed(epoch)
        self._audit.append(AuditEvent(op=Operation.CREDENTIAL_ADD, outcome=Outcome.OK,
                                      actor=actor, store=store,
                                      detail={"access_key_id": akid}))
        return akid, sec

    def remove(self, store: str, access_key_id: str, actor: Actor) -> None:
        try:
            with self._engine.begin() as conn:
                n = conn.execute(delete(t.xks_credentials).where(
                    t.xks_credentials.c.store == store,
                    t.xks_credentials.c.access_key_id == access_key_id)).rowcount
                epoch = self._registry.bump_epoch(conn) if n else None
        except OperationalError:
            raise DependencyTimeoutError("the database is unavailable") from None
        if n == 0 or epoch is None:
            raise KeyNotFoundError("no such credential in this store")
        self._changed(epoch)
        self._audit.append(AuditEvent(op=Operation.CREDENTIAL_REMOVE, outcome=Outcome.OK,
                                      actor=actor, store=store,
                                      detail={"access_key_id": access_key_id}))

    def list(self, store: str) -> list[CredentialInfo]:
        with read_only(self._engine) as conn:
            rows = conn.execute(select(t.xks_credentials.c.access_key_id,
                                       t.xks_credentials.c.created_at)
                                .where(t.xks_credentials.c.store == store)
                                .order_by(t.xks_credentials.c.created_at)).all()
        return [CredentialInfo(r.access_key_id, store, r.created_at) for r in rows]

    def _changed(self, epoch: int) -> None:
        with self._lock:
            self._opened.clear()
        self._cache.invalidate()
        self._registry.changed(epoch)

    def lookup(self, store: str, access_key_id: str) -> bytes | None:
        """The secret of ``access_key_id`` if it belongs to ``store`` now, else None."""
        if len(access_key_id) > 64:
            return None
        epoch = self._cache.epoch()
        with self._lock:
            if epoch != self._epoch:
                self._opened.clear()
                self._epoch = epoch
            known = access_key_id in self._opened
            entry = self._opened.get(access_key_id)
        if not known:
            entry = self._open(access_key_id)
            with self._lock:
                if self._epoch == epoch and len(self._opened) < 10_000:
                    self._opened[access_key_id] = entry
        if entry is None or entry[0] != store:
            return None
        return entry[1]

    def _open(self, access_key_id: str) -> tuple[str, bytes] | None:
        try:
            with read_only(self._engine) as conn:
                row = conn.execute(select(t.xks_credentials.c.store,
                                          t.xks_credentials.c.secret_sealed)
                                   .where(t.xks_credentials.c.access_key_id == access_key_id)
                                   ).first()
        except OperationalError:
            raise DependencyTimeoutError("the database is unavailable") from None
        if row is None:
            return None
        sealed = bytes(row.secret_sealed)
        ct = GcmCiphertext(sealed[:GCM_IV_BYTES], sealed[GCM_IV_BYTES:-GCM_TAG_BYTES],
                           sealed[-GCM_TAG_BYTES:])
        try:
            secret = self._hsm.decrypt(CREDENTIAL_KEY_LABEL, ct.iv, ct.ciphertext, ct.tag,
                                       _aad(row.store, access_key_id))
        except HsmError as exc:
            raise translate_hsm_error(exc) from None
        return row.store, secret
