"""The key service: lifecycle and cryptography of customer keys, over the registry and HSM.

Where an XKS encrypt goes: kms/xks/routes.py -> kms/xks/handler.py ->
``KeyService.encrypt`` (this file: one check of state and usage, then one HSM call) ->
``hsm.Hsm.encrypt``; the handler then appends the audit record.

What the HSM's AAD binds (``bound_aad``): a domain tag, the key id and the key version, and
then the caller's AAD. A ciphertext therefore only decrypts under the key and version it
was made with, whatever the caller claims.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from hsm import (
    AesUsage,
    DuplicateLabel,
    GcmCiphertext,
    HsmError,
    HsmUnavailable,
    InvalidCiphertext,
    PermissionDenied,
)
from hsm import KeyNotFound as HsmKeyNotFound
from hsm.calls import GcmDecrypt, GcmEncrypt
from hsm.frozen import quick_init
from hsm.interface import Hsm
from kms.audit.event import AuditEvent, AuditSink
from kms.audit.record import Actor, Operation, Outcome
from kms.clock import Clock, iso
from kms.errors import (
    ConflictError,
    DependencyTimeoutError,
    InvalidCiphertextError,
    InvalidKeyUsageError,
    InvalidStateError,
    KeyNotFoundError,
    KmsError,
    ValidationError,
)
from kms.keys.model import (
    STORE_NAME_RE,
    URI_PREFIX_RE,
    KeyRecord,
    KeyState,
    KeyStore,
    KeyUsage,
    KeyVersion,
    Transition,
    check_key_id,
    next_state,
)
from kms.keys.registry import Registry
from kms.keys.state_cache import KeyStateCache

Authorizer = Callable[[KeyRecord], None]
AAD_DOMAIN = b"kms-key-v1"
MIN_DELETION_DAYS, MAX_DELETION_DAYS = 7, 30
HSM_USAGES = frozenset({AesUsage.ENCRYPT, AesUsage.DECRYPT})


def bound_aad(key_id: str, version: int, aad: bytes) -> bytes:
    """The AAD given to the HSM: domain || len(key id) || key id || version || caller AAD."""
    return _binding(key_id, version) + aad


@functools.lru_cache(maxsize=1024)
def _binding(key_id: str, version: int) -> bytes:
    """The part of :func:`bound_aad` before the caller's AAD (cached: one per key version
    in use; callers pass ids of keys that exist, at most 128 ASCII characters)."""
    kid = key_id.encode("ascii")
    return AAD_DOMAIN + struct.pack(">B", len(kid)) + kid + struct.pack(">I", version)


def hsm_label(key_id: str, version: int) -> str:
    """A fresh, unique label for one key version's HSM object."""
    return f"kms/{key_id}/v{version}/{secrets.token_hex(4)}"


def translate_hsm_error(exc: HsmError) -> KmsError:
    """The one place where HSM-layer errors become client-visible errors."""
    if isinstance(exc, InvalidCiphertext):
        return InvalidCiphertextError("the ciphertext or its authentication data is invalid")
    if isinstance(exc, HsmKeyNotFound):
        # The registry says the key exists but the HSM object is gone: never serve it.
        return InvalidStateError("the key material is not available in the HSM")
    if isinstance(exc, PermissionDenied):
        return InvalidKeyUsageError("the HSM key does not permit this operation")
    if isinstance(exc, HsmUnavailable):
        return DependencyTimeoutError("the HSM is unavailable")
    return DependencyTimeoutError("the HSM failed")


@quick_init
@dataclass(frozen=True, slots=True)
class Encrypted:
    version: int
    ciphertext: GcmCiphertext


class KeyService:
    """Lifecycle changes (audited here) and the encrypt/decrypt primitives (audited by callers)."""

    def __init__(self, registry: Registry, hsm: Hsm, cache: KeyStateCache, audit: AuditSink,
                 clock: Clock, *, allow_short_deletion: bool = False) -> None:
        self.registry = registry
        self.hsm = hsm
        self.cache = cache
        self.audit = audit
        self.clock = clock
        self.allow_short_deletion = allow_short_deletion

    # -- the one check before any HSM call ---------------------------------------------

    def usable_key(self, key_id: str, usage: KeyUsage, store: str | None = None) -> KeyRecord:
        """The key's snapshot if it may be used for ``usage`` now; else the typed error."""
        key = self.cache.get(key_id)
        if store is not None and key.store != store:
            raise KeyNotFoundError("no such key in this key store")
        if not key.store_enabled:
            raise InvalidStateError("the key store is disabled")
        if key.state is not KeyState.ENABLED:
            raise InvalidStateError(f"the key is {key.state.value}")
        if usage not in key.usage:
            raise InvalidKeyUsageError(f"the key does not allow {usage.value}")
        return key

    # -- cryptography -------------------------------------------------------------------

    def encrypt_call(self, key_id: str, plaintext: bytes,
                     aad: bytes | Callable[[int], bytes], *, store: str | None = None,
                     authorize: Authorizer | None = None) -> tuple[KeyRecord, int, GcmEncrypt]:
        """The checks of :meth:`encrypt`, and the HSM call it would make (the key's
        snapshot, the version, the call), for a caller that makes the call elsewhere."""
        key = self.usable_key(key_id, KeyUsage.ENCRYPT, store)
        if authorize is not None:
            authorize(key)
        version = key.version(key.primary_version)
        assert version is not None  # the registry keeps the primary version's row
        caller_aad = aad(version.version) if callable(aad) else aad
        call = GcmEncrypt(version.hsm_label, plaintext,
                          bound_aad(key_id, version.version, caller_aad))
        return key, version.version, call

    def encrypt(self, key_id: str, plaintext: bytes, aad: bytes | Callable[[int], bytes], *,
                store: str | None = None, authorize: Authorizer | None = None) -> Encrypted:
        """Encrypt under the primary version. ``aad`` may be a function of the version, for
        callers (XKS) whose AAD carries the version it was made with; ``authorize`` may
        refuse the request on the key's snapshot before the HSM is called."""
        _, version, call = self.encrypt_call(key_id, plaintext, aad, store=store,
                                             authorize=authorize)
        try:
            return Encrypted(version, call.run(self.hsm))
        except HsmError as exc:
            raise translate_hsm_error(exc) from None

    def decrypt_call(self, key_id: str, version: int, ct: GcmCiphertext, aad: bytes, *,
                     store: str | None = None, usage: KeyUsage = KeyUsage.DECRYPT,
                     authorize: Authorizer | None = None) -> tuple[KeyRecord, GcmDecrypt]:
        """The checks of :meth:`decrypt`, and the HSM call it would make."""
        key = self.usable_key(key_id, usage, store)
        if authorize is not None:
            authorize(key)
        found = key.version(version)
        if found is None or version < key.min_decrypt_version:
            raise InvalidCiphertextError("the ciphertext or its authentication data is invalid")
        return key, GcmDecrypt(found.hsm_label, ct.iv, ct.ciphertext, ct.tag,
                               bound_aad(key_id, version, aad))

    def decrypt(self, key_id: str, version: int, ct: GcmCiphertext, aad: bytes, *,
                store: str | None = None, usage: KeyUsage = KeyUsage.DECRYPT,
                authorize: Authorizer | None = None) -> bytes:
        """Decrypt; ``usage=ENCRYPT`` is for the verifying decrypt right after an encrypt."""
        _, call = self.decrypt_call(key_id, version, ct, aad, store=store, usage=usage,
                                    authorize=authorize)
        try:
            return call.run(self.hsm)
        except HsmError as exc:
            raise translate_hsm_error(exc) from None

    def confirm(self, key: KeyRecord, usage: KeyUsage, version: int) -> None:
        """After an HSM call made while this process went on (the HSM worker process): the
        result is released only if the key still allows it. Revoking a key refuses every
        call answered after the revoke returned, not only those checked after it."""
        current = self.cache.get(key.key_id)
        if current is key:
            return
        self.usable_key(key.key_id, usage, key.store)
        if usage is KeyUsage.DECRYPT and version < current.min_decrypt_version:
            raise InvalidCiphertextError("the ciphertext or its authentication data is invalid")

    # -- lifecycle ----------------------------------------------------------------------

    def _audited(self, op: Operation, actor: Actor, key_id: str | None,
                 detail: dict[str, str | int | bool | None] | None = None,
                 store: str | None = None, version: int | None = None) -> None:
        self.audit.append(AuditEvent(op=op, outcome=Outcome.OK, actor=actor, key_id=key_id,
                                     key_version=version, store=store,
                                     detail=detail or {}))

    def _audit_failure(self, op: Operation, actor: Actor, key_id: str | None,
                       exc: KmsError, started: float) -> None:
        with contextlib.suppress(KmsError):  # the original error is what the caller sees
            self.audit.append(AuditEvent(
                op=op, outcome=Outcome.ERROR, actor=actor, key_id=key_id,
                error=exc.error_name, latency_us=int((time.perf_counter() - started) * 1e6)))

    def _new_hsm_key(self, key_id: str, version: int) -> str:
        for _ in range(3):
            label = hsm_label(key_id, version)
            try:
                self.hsm.generate_aes_key(label, HSM_USAGES)
                return label
            except DuplicateLabel:
                continue
            except HsmError as exc:
                raise translate_hsm_error(exc) from None
        raise ConflictError("could not find a free HSM label")

    def create_key(self, key_id: str, usage: frozenset[KeyUsage], actor: Actor,
                   store: str = "default", description: str | None = None) -> KeyRecord:
        check_key_id(key_id)
        if description is not None and len(description) > 256:
            raise ValidationError("a description is at most 256 characters")
        started = time.perf_counter()
        try:
            self.registry.get_store(store)
            try:
                self.registry.get_key(key_id)
                raise ConflictError(f"key {key_id!r} exists already")
            except KeyNotFoundError:
                pass
            label = self._new_hsm_key(key_id, 1)
            try:
                self.registry.create_key(key_id, store, usage, label, False, self.clock(),
                                         description)
            except KmsError:
                self._discard(label)
                raise
        except KmsError as exc:
            self._audit_failure(Operation.KEY_CREATE, actor, key_id, exc, started)
            raise
        self.cache.invalidate()
        self._audited(Operation.KEY_CREATE, actor, key_id, {"usage": ",".join(
            sorted(u.value for u in usage))}, store=store, version=1)
        return self.registry.get_key(key_id)

    def _discard(self, label: str) -> None:
        with contextlib.suppress(HsmError):  # an orphan HSM object is harmless
            self.hsm.destroy_key(label)

    def import_hsm_key(self, key_id: str, label: str, usage: frozenset[KeyUsage],
                       actor: Actor, store: str = "default") -> KeyRecord:
        """Register an AES key that already exists in the HSM, found by its label."""
        check_key_id(key_id)
        started = time.perf_counter()
        try:
            if self.registry.label_in_use(label):
                raise ConflictError("that HSM key is registered already")
            try:
                attrs = self.hsm.key_attributes(label)
            except HsmKeyNotFound:
                raise KeyNotFoundError(f"no HSM key labelled {label!r}") from None
            except HsmError as exc:
                raise translate_hsm_error(exc) from None
            if attrs.key_type != "AES" or not attrs.sensitive or attrs.extractable:
                raise ValidationError(
                    "only sensitive, non-extractable AES keys can be imported")
            needs = [(KeyUsage.ENCRYPT, attrs.encrypt), (KeyUsage.DECRYPT, attrs.decrypt)]
            missing = [u.value for u, ok in needs if u in usage and not ok]
            if missing:
                raise ValidationError("the HSM key does not permit " + ",".join(missing))
            self.registry.create_key(key_id, store, usage, label, True, self.clock())
        except KmsError as exc:
            self._audit_failure(Operation.KEY_IMPORT, actor, key_id, exc, started)
            raise
        self.cache.invalidate()
        self._audited(Operation.KEY_IMPORT, actor, key_id, {"hsm_label": label}, store=store,
                      version=1)
        return self.registry.get_key(key_id)

    def rotate(self, key_id: str, actor: Actor) -> KeyRecord:
        started = time.perf_counter()
        try:
            key = self.registry.get_key(key_id)
            next_state(Transition.ROTATE, key.state)
            number = max(v.version for v in key.versions) + 1
            label = self._new_hsm_key(key_id, number)
            try:
                key = self.registry.add_version(key_id, label, self.clock())
            except KmsError:
                self._discard(label)
                raise
        except KmsError as exc:
            self._audit_failure(Operation.KEY_ROTATE, actor, key_id, exc, started)
            raise
        self.cache.remember(key)
        self._audited(Operation.KEY_ROTATE, actor, key_id, version=key.primary_version)
        return key

    def set_min_decrypt_version(self, key_id: str, version: int, actor: Actor) -> KeyRecord:
        key = self.registry.get_key(key_id)
        if not 1 <= version <= key.primary_version:
            raise ValidationError("the minimum decryption version must be 1..primary version")
        key = self.registry.set_min_decrypt_version(key_id, version, self.clock())
        self.cache.remember(key)
        self._audited(Operation.KEY_SET_MIN_DECRYPT_VERSION, actor, key_id,
                      {"min_decrypt_version": version})
        return key

    def set_rules(self, key_id: str, rules_json: str | None, actor: Actor) -> KeyRecord:
        """Secondary-authorization rules (validated by kms.xks.authorization.parse_rules)."""
        key = self.registry.set_rules(key_id, rules_json, self.clock())
        self.cache.remember(key)
        self._audited(Operation.KEY_SET_RULES, actor, key_id, {"rules": rules_json or ""})
        return key

    def _transition(self, op: Operation, transition: Transition, key_id: str, actor: Actor,
                    detail: dict[str, str | int | bool | None] | None = None,
                    deletion_due: str | None = None) -> KeyRecord:
        started = time.perf_counter()
        try:
            _, after = self.registry.transition(key_id, transition, self.clock(),
                                                deletion_due=deletion_due)
        except KmsError as exc:
            self._audit_failure(op, actor, key_id, exc, started)
            raise
        # Before returning: this process refuses the key from the next call on, without
        # even a database read (the record comes from the changing transaction).
        self.cache.remember(after)
        self._audited(op, actor, key_id, detail, store=after.store)
        return after

    def revoke(self, key_id: str, reason: str, actor: Actor) -> KeyRecord:
        """The kill switch: ENABLED -> DISABLED."""
        return self._transition(Operation.KEY_REVOKE, Transition.REVOKE, key_id, actor,
                                {"reason": reason[:500]})

    def enable(self, key_id: str, actor: Actor) -> KeyRecord:
        return self._transition(Operation.KEY_ENABLE, Transition.ENABLE, key_id, actor)

    def schedule_deletion(self, key_id: str, days: int, actor: Actor) -> KeyRecord:
        low = 0 if self.allow_short_deletion else MIN_DELETION_DAYS
        if not low <= days <= MAX_DELETION_DAYS:
            raise ValidationError(
                f"the waiting period is {MIN_DELETION_DAYS} to {MAX_DELETION_DAYS} days")
        due = iso(self.clock() + timedelta(days=days))
        return self._transition(Operation.KEY_SCHEDULE_DELETION, Transition.SCHEDULE_DELETION,
                                key_id, actor, {"days": days, "due": due}, deletion_due=due)

    def cancel_deletion(self, key_id: str, actor: Actor) -> KeyRecord:
        return self._transition(Operation.KEY_CANCEL_DELETION, Transition.CANCEL_DELETION,
                                key_id, actor)

    def destroy(self, key_id: str, actor: Actor) -> KeyRecord:
        """Crypto-shred: mark DESTROYED (refused from now on), then destroy every HSM object.

        The state changes first, so a failure half-way leaves a key that is refused and
        whose remaining objects ``destroy`` removes when run again.
        """
        key = self.registry.get_key(key_id)
        if key.state is not KeyState.DESTROYED:
            key = self._transition(Operation.KEY_DESTROY, Transition.DESTROY, key_id, actor)
        elif not self._has_hsm_objects(key.versions):
            next_state(Transition.DESTROY, key.state)  # nothing left: a forbidden repeat
        for v in key.versions:
            try:
                self.hsm.destroy_key(v.hsm_label)
            except HsmKeyNotFound:
                continue
            except HsmError as exc:
                raise translate_hsm_error(exc) from None
        return key

    def _has_hsm_objects(self, versions: tuple[KeyVersion, ...]) -> bool:
        try:
            return any(self.hsm.has_key(v.hsm_label) for v in versions)
        except HsmError as exc:
            raise translate_hsm_error(exc) from None

    def sweep_due_deletions(self, actor: Actor) -> list[str]:
        """Destroy keys whose deletion waiting period has ended (run periodically by serve)."""
        done = []
        for key_id in self.registry.due_for_deletion(self.clock()):
            self.destroy(key_id, actor)
            done.append(key_id)
        return done

    def create_store(self, name: str, uri_prefix: str, actor: Actor, *,
                     throttle_rps: int | None = None) -> KeyStore:
        """A new key store serving XKS under ``/{uri_prefix}/kms/xks/v1`` (no credentials
        yet: add them with the credential store)."""
        prefix = uri_prefix.strip("/")
        if not STORE_NAME_RE.fullmatch(name):
            raise ValidationError("a store name is 1-64 characters of A-Za-z0-9_-")
        if not URI_PREFIX_RE.fullmatch(prefix):
            raise ValidationError("the URI prefix is 1-100 characters of A-Za-z0-9/_-")
        if throttle_rps is not None and throttle_rps < 1:
            raise ValidationError("the throttle is a positive number of requests per second")
        self.registry.create_store(name, prefix, self.clock())
        if throttle_rps is not None:
            self.registry.update_store(name, throttle_rps=throttle_rps)
        self.cache.invalidate()
        self._audited(Operation.STORE_CREATE, actor, None, {"uri_prefix": prefix}, store=name)
        return self.registry.get_store(name)

    def set_store_enabled(self, store: str, enabled: bool, actor: Actor) -> None:
        self.registry.update_store(store, enabled=enabled)
        self.cache.invalidate()
        self._audited(Operation.STORE_ENABLE if enabled else Operation.STORE_DISABLE, actor,
                      None, store=store)
