"""One XKS request, from raw HTTP parts to response bytes and its audit event. Synchronous:
the route (kms/xks/routes.py) runs it on a worker thread and then waits for the audit
record to be durable before it answers.

Order of checks, each failure answered with the spec's error and audited (but the first
two, which name no key store):

1. the path: ``/{prefix}/kms/xks/v1/health`` or ``.../keys/{externalKeyId}/{operation}``,
   with a known prefix -> else 404 InvalidUriPathException;
2. the method: POST -> else 405;
3. SigV4 against the store's credentials -> else 401 AuthenticationFailedException;
4. the store's quota -> else 429 ThrottlingException;
5. the body (kms/xks/wire.py) -> 400 ValidationException / 501 UnsupportedOperation;
6. the store and the key: state, usage (KeyService.usable_key), secondary authorization
   (kms/xks/authorization.py), then one HSM operation.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from hsm import GcmCiphertext, HealthStatus, HsmError, RebuildDeferred
from hsm.calls import GcmCall, GcmResult
from hsm.frozen import quick_init
from hsm.interface import Hsm
from kms.audit.event import AuditEvent, context_hash
from kms.audit.record import Actor, ActorKind, DetailValue, Operation, Outcome
from kms.audit.record import RequestMetadata as AuditRequest
from kms.clock import Clock
from kms.db.engine import WouldBlock, may_block
from kms.errors import (
    InternalError,
    InvalidKeyUsageError,
    InvalidUriPathError,
    KeyNotFoundError,
    KmsError,
    UnsupportedOperationError,
)
from kms.keys.model import KeyRecord, KeyState, KeyStore, KeyUsage
from kms.keys.service import Authorizer, KeyService, translate_hsm_error
from kms.keys.state_cache import KeyStateCache
from kms.settings import HEALTH_KEY_LABEL
from kms.xks import authorization, wire
from kms.xks.credential_store import CredentialStore
from kms.xks.sigv4 import SignatureRejected, SigningKeyCache, verify_sigv4
from kms.xks.throttle import StoreThrottle

PATH_RE = re.compile(
    r"/(?P<prefix>[A-Za-z0-9/_-]{1,100})/kms/xks/v1/"
    r"(?:(?P<health>health)|keys/(?P<key>[A-Za-z0-9._-]{1,128})/(?P<op>metadata|encrypt|decrypt))"
)
AKID_RE = re.compile(r"[A-Z2-7]{20,30}")
CREDENTIAL_RE = re.compile(r"Credential=([A-Za-z0-9]{1,64})/")
SCHEME_VERSION = 1
# verify_sigv4 reads the raw header list (duplicates matter); its mapping is not used then
_NO_HEADERS: MappingProxyType[str, str] = MappingProxyType({})
HEALTH_CACHE_S = 5.0  # the spec allows up to 60 s; shorter reflects HSM faults sooner
OPERATIONS = {"health": Operation.XKS_HEALTH, "metadata": Operation.XKS_METADATA,
              "encrypt": Operation.XKS_ENCRYPT, "decrypt": Operation.XKS_DECRYPT}


# Authentication failures are audited one by one up to this rate per source address; beyond
# it they are still refused but only counted, and the count rides on the source's next
# audited failure ("suppressed_since_last"). Without the budget a flood of bad signatures
# makes the log (and its group commit) the attacker's amplifier: 10,000 bad requests cost
# 10,000 durable records and cut valid throughput by more than half (tests/reliability).
# Past the budget the refusal is also paced and not logged line by line (kms/xks/pacing.py);
# unknown paths and methods have a budget of their own (``XksHandler._refuse``).
AUTH_FAILURE_AUDIT_RATE = 5.0
AUTH_FAILURE_AUDIT_BURST = 20


class FailureBudget:
    """A token bucket per source, for how many failures are audited individually."""

    def __init__(self, rate: float, burst: int, max_sources: int = 4096) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float, int]] = {}  # tokens, time, suppressed

    def admit(self, source: str) -> tuple[bool, int]:
        """(handle this one individually?, failures suppressed since the last one handled
        individually)."""
        now = time.monotonic()
        with self._lock:
            tokens, last, suppressed = self._buckets.pop(source, (self.burst, now, 0))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[source] = (tokens, now, suppressed + 1)
                admitted, carried = False, 0
            else:
                self._buckets[source] = (tokens - 1.0, now, 0)
                admitted, carried = True, suppressed
            while len(self._buckets) > self.max_sources:  # oldest first (insertion order)
                del self._buckets[next(iter(self._buckets))]
            return admitted, carried


class MethodNotAllowed(KmsError):
    error_name = "ValidationException"
    http_status = 405


@quick_init
@dataclass(frozen=True, slots=True)
class XksRequest:
    method: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    source: str = ""  # the peer address: the unit of the auth-failure audit budget


@quick_init
@dataclass(frozen=True, slots=True)
class XksResponse:
    status: int
    body: bytes
    event: AuditEvent | None
    operation: str
    flooding: bool = False  # refused past its source's failure budget: paced, not logged


_UNAUTHENTICATED = Actor(kind=ActorKind.XKS_CREDENTIAL, id="unauthenticated")
_OK, _DENIED, _ERROR = Outcome.OK, Outcome.DENIED, Outcome.ERROR
_NO_DETAIL: MappingProxyType[str, DetailValue] = MappingProxyType({})


@functools.lru_cache(maxsize=1024)
def _credential_actor(access_key_id: str) -> Actor:
    """The audit actor of a verified access key id (immutable, so shared per id)."""
    return Actor(kind=ActorKind.XKS_CREDENTIAL, id=access_key_id)


@dataclass(slots=True)
class _Call:
    """What is known about a request as it is processed, for its audit record."""

    op: Operation
    store: KeyStore
    key_id: str | None
    actor: Actor
    started: float  # time.perf_counter() when the request began (the record's latency)
    name: str  # the XKS operation, as the path names it (metrics)
    request: AuditRequest | None = None
    key_version: int | None = None
    ctx_hash: str | None = None
    detail: dict[str, DetailValue] | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class HsmStep:
    """A request checked up to its one HSM call (:meth:`XksHandler.begin`): make
    ``hsm_call`` anywhere, then :meth:`XksHandler.complete` answers the request."""

    hsm_call: GcmCall
    call: _Call
    key: KeyRecord  # the snapshot the request was checked against
    usage: KeyUsage
    version: int
    finish: Callable[[GcmResult], bytes]  # the response body, from the call's result


class XksHandler:
    def __init__(self, keys: KeyService, cache: KeyStateCache, credentials: CredentialStore,
                 hsm: Hsm, clock: Clock, *, fleet_size: int = 1,
                 allowed_regions: frozenset[str] | None = None) -> None:
        self.keys = keys
        self.cache = cache
        self.credentials = credentials
        self.hsm = hsm
        self.clock = clock
        self.fleet_size = fleet_size
        self.allowed_regions = allowed_regions
        self.throttle = StoreThrottle()
        self._signing_keys = SigningKeyCache()
        self._auth_failures = FailureBudget(AUTH_FAILURE_AUDIT_RATE, AUTH_FAILURE_AUDIT_BURST)
        self._refusals = FailureBudget(AUTH_FAILURE_AUDIT_RATE, AUTH_FAILURE_AUDIT_BURST)
        self._health_lock = threading.Lock()
        self._health: tuple[float, wire.EkmFleetDetail] | None = None

    # -- entry ---------------------------------------------------------------------------

    def process(self, req: XksRequest) -> XksResponse:
        """The whole request, its HSM call made here with this process's session."""
        step = self.begin(req)
        if isinstance(step, HsmStep):
            return self.complete(step, self.make_call(step))
        return step

    def make_call(self, step: HsmStep) -> GcmResult | HsmError:
        """``step``'s HSM call with this process's session (RebuildDeferred propagates)."""
        try:
            return step.hsm_call.run(self.hsm)
        except HsmError as exc:
            return exc

    def complete(self, step: HsmStep, outcome: GcmResult | HsmError) -> XksResponse:
        """The answer to a request whose HSM call gave ``outcome`` (wherever it was made).
        A result is released only if the key still allows it (KeyService.confirm)."""
        try:
            if isinstance(outcome, HsmError):
                raise translate_hsm_error(outcome)
            self.keys.confirm(step.key, step.usage, step.version)
            body = step.finish(outcome)
        except KmsError as exc:
            return self._error(exc, step.call)
        except WouldBlock:
            raise  # the edge completes the request on a worker thread
        except Exception:  # never a stack trace to the caller
            return self._error(InternalError("internal error"), step.call)
        call = step.call
        return XksResponse(200, body, self._event(call, None), call.name)

    def begin(self, req: XksRequest) -> XksResponse | HsmStep:
        """Every check of the request, up to its HSM call if it makes one (encrypt without
        a CDIV, decrypt): then the call to make and how to answer, for ``complete``."""
        started = time.perf_counter()
        match = PATH_RE.fullmatch(req.raw_path)
        try:
            store = self._store(match.group("prefix")) if match else None
        except KmsError as exc:  # the database is away: 503, never an unhandled 500
            return self._unaudited(exc, "unknown")
        if match is None or store is None or req.query:
            return self._refuse(InvalidUriPathError("unknown URI path"), req, "unknown")
        name = "health" if match.group("health") else match.group("op")
        call = _Call(OPERATIONS[name], store, match.group("key"), _UNAUTHENTICATED, started,
                     name)
        if req.method != "POST":
            return self._refuse(MethodNotAllowed(f"method {req.method} is not allowed"), req,
                                name)
        try:
            caller = verify_sigv4(
                req.method, req.raw_path, req.query, _NO_HEADERS, req.body,
                lookup=lambda akid: self.credentials.lookup(store.name, akid),
                now=datetime.now(UTC), allowed_regions=self.allowed_regions,
                raw_headers=req.headers, key_cache=self._signing_keys)
        except SignatureRejected as exc:
            admitted, suppressed = self._auth_failures.admit(req.source)
            if not admitted:  # a flood: answered, counted, not recorded one by one
                return XksResponse(*wire.error_body_for(exc), None, name, flooding=True)
            call.op = Operation.XKS_AUTH
            call.detail = {"reason": exc.reason, "path_operation": name}
            if suppressed:
                call.detail["suppressed_since_last"] = suppressed
            claimed = self._claimed_akid(req.headers)
            if claimed:
                call.detail["access_key_id"] = claimed
            return self._error(exc, call)
        except KmsError as exc:
            return self._error(exc, call)
        call.actor = _credential_actor(caller.access_key_id)
        try:
            self.throttle.check(store.name, store.throttle_rps)
            body = self._dispatch(call, req.body)
        except KmsError as exc:
            return self._error(exc, call)
        except (WouldBlock, RebuildDeferred):
            raise  # the edge reruns the request on a worker thread
        except Exception:  # never a stack trace to the caller
            return self._error(InternalError("internal error"), call)
        if isinstance(body, HsmStep):
            return body
        return XksResponse(200, body, self._event(call, None), name)

    def _dispatch(self, call: _Call, body: bytes) -> bytes | HsmStep:
        name = call.name
        if name == "health":
            if not may_block() and not self._health_fresh():
                raise WouldBlock()  # the deep check is two HSM calls: not on the loop
            hreq = wire.parse_health_request(body)
            call.request = self._audit_request(hreq.request_metadata)
            return self._health_body()
        if name == "metadata":
            mreq = wire.parse_metadata_request(body)
            call.request = self._audit_request(mreq.request_metadata)
            return self._metadata(call, mreq.request_metadata)
        if name == "encrypt":
            ereq = wire.parse_encrypt_request(body)
            call.request = self._audit_request(ereq.request_metadata)
            return self._encrypt(call, ereq)
        dreq = wire.parse_decrypt_request(body)
        call.request = self._audit_request(dreq.request_metadata)
        return self._decrypt(call, dreq)

    # -- operations ----------------------------------------------------------------------

    def _authorizer(self, call: _Call, md: wire.RequestMetadata) -> Authorizer:
        def authorize(key: KeyRecord) -> None:
            try:
                authorization.check(key.rules, md)
            except authorization.DeniedByRule as exc:
                call.detail = {"denied_by": exc.rule}
                raise

        return authorize

    def _metadata(self, call: _Call, md: wire.RequestMetadata) -> bytes:
        assert call.key_id is not None
        key = self.cache.get(call.key_id)
        if key.store != call.store.name:
            raise KeyNotFoundError("no such key in this key store")
        self._authorizer(call, md)(key)
        enabled = key.state is KeyState.ENABLED and key.store_enabled
        usage = [u.value for u in (KeyUsage.ENCRYPT, KeyUsage.DECRYPT) if u in key.usage]
        return wire.metadata_response(usage, "ENABLED" if enabled else "DISABLED")

    def _encrypt(self, call: _Call, req: wire.EncryptRequest) -> bytes | HsmStep:
        assert call.key_id is not None
        if req.wants_cdiv and not may_block():
            raise WouldBlock()  # two HSM calls (encrypt, verifying decrypt): not on the loop
        aad = req.additional_authenticated_data
        call.ctx_hash = context_hash(aad)

        def aad_for(version: int) -> bytes:
            return wire.hsm_aad(aad, wire.ciphertext_metadata_v1(version))

        authorize = self._authorizer(call, req.request_metadata)
        key_id, store = call.key_id, call.store.name
        if not req.wants_cdiv:  # one HSM call: made by the caller of begin()
            key, version, hsm_call = self.keys.encrypt_call(
                key_id, req.plaintext, aad_for, store=store, authorize=authorize)

            def finish(result: GcmResult) -> bytes:
                assert isinstance(result, GcmCiphertext)
                call.key_version = version
                return wire.encrypt_response(
                    result.ciphertext, result.iv, result.tag,
                    ciphertext_metadata=wire.ciphertext_metadata_v1(version))

            return HsmStep(hsm_call, call, key, KeyUsage.ENCRYPT, version, finish)

        def authorize_cdiv(key: KeyRecord) -> None:
            authorize(key)
            # Spec appendix C: the CDIV is proven by an XKS *decrypt* of the output, so a
            # key without DECRYPT cannot give one (InvalidKeyUsageException, before the HSM).
            if KeyUsage.DECRYPT not in key.usage:
                raise InvalidKeyUsageError(
                    "a ciphertextDataIntegrityValue needs a key that allows DECRYPT")

        # Spec: compute the CDIV, then decrypt once to prove the ciphertext is sound.
        enc = self.keys.encrypt(key_id, req.plaintext, aad_for, store=store,
                                authorize=authorize_cdiv)
        call.key_version = enc.version
        md = wire.ciphertext_metadata_v1(enc.version)
        ct = enc.ciphertext
        integrity = wire.cdiv(aad, md, ct.iv, ct.ciphertext, ct.tag)
        check = self.keys.decrypt(key_id, enc.version, ct, aad_for(enc.version), store=store,
                                  usage=KeyUsage.ENCRYPT)
        if check != req.plaintext:
            raise InternalError("the verifying decryption failed")
        return wire.encrypt_response(ct.ciphertext, ct.iv, ct.tag, ciphertext_metadata=md,
                                     ciphertext_data_integrity_value=integrity)

    def _decrypt(self, call: _Call, req: wire.DecryptRequest) -> HsmStep:
        assert call.key_id is not None
        call.ctx_hash = context_hash(req.additional_authenticated_data)
        md = wire.decode_ciphertext_metadata(req.ciphertext_metadata)
        if md.scheme_version != SCHEME_VERSION:
            raise UnsupportedOperationError("unknown ciphertext metadata scheme")
        aad = wire.hsm_aad(req.additional_authenticated_data, req.ciphertext_metadata)
        ct = GcmCiphertext(req.initialization_vector, req.ciphertext, req.authentication_tag)
        key, hsm_call = self.keys.decrypt_call(
            call.key_id, md.key_version, ct, aad, store=call.store.name,
            authorize=self._authorizer(call, req.request_metadata))

        def finish(result: GcmResult) -> bytes:
            assert isinstance(result, bytes)
            # Only now is the key version authenticated: a forged one (0, say) must not
            # reach the audit record, which would refuse it and turn a 400 into a 503.
            call.key_version = md.key_version
            return wire.decrypt_response(result)

        return HsmStep(hsm_call, call, key, KeyUsage.DECRYPT, md.key_version, finish)

    def _health_fresh(self) -> bool:
        with self._health_lock:
            cached = self._health
        return cached is not None and time.monotonic() - cached[0] < HEALTH_CACHE_S

    def health_detail(self) -> wire.EkmFleetDetail:
        """The deep HSM check, cached for HEALTH_CACHE_S (the spec allows 60 s)."""
        now = time.monotonic()
        with self._health_lock:
            cached = self._health
        if cached is not None and now - cached[0] < HEALTH_CACHE_S:
            return cached[1]
        report = self.hsm.probe(HEALTH_KEY_LABEL)
        status = report.status
        if status is HealthStatus.DEGRADED and report.detail == "health key missing":
            status = HealthStatus.UNAVAILABLE
        detail = wire.EkmFleetDetail(id=report.token_label[:64] or "hsm",
                                     model=report.token_model[:64] or "PKCS#11",
                                     health_status=status.value)
        with self._health_lock:
            self._health = (time.monotonic(), detail)
        return detail

    def _health_body(self) -> bytes:
        return wire.health_response(
            xks_proxy_fleet_size=self.fleet_size, xks_proxy_vendor="cmk-kms",
            xks_proxy_model="cmk-kms 0.1", ekm_vendor="PKCS#11",
            ekm_fleet_details=[self.health_detail()])

    # -- helpers --------------------------------------------------------------------------

    def _store(self, prefix: str) -> KeyStore | None:
        for store in self.cache.stores():
            if store.uri_prefix == prefix:
                return store
        return None

    @staticmethod
    def _claimed_akid(headers: list[tuple[str, str]]) -> str | None:
        for name, value in headers:
            if name.lower() == "authorization":
                m = CREDENTIAL_RE.search(value[:512])
                if m and AKID_RE.fullmatch(m.group(1)):
                    return m.group(1)
        return None

    @staticmethod
    def _audit_request(md: wire.RequestMetadata) -> AuditRequest:
        return AuditRequest.from_xks(md.raw)

    def _event(self, call: _Call, exc: KmsError | None) -> AuditEvent:
        if exc is None:
            outcome, error = _OK, None
        else:
            outcome = _DENIED if exc.http_status in (401, 403) else _ERROR
            error = exc.error_name
        key_id = call.key_id
        if key_id is not None and len(key_id) > 128:
            key_id = None
        return AuditEvent(call.op, outcome, call.actor, key_id, call.key_version,
                          call.store.name, error, call.request, call.ctx_hash,
                          int((time.perf_counter() - call.started) * 1e6),
                          call.detail or _NO_DETAIL)

    def _refuse(self, exc: KmsError, req: XksRequest, name: str) -> XksResponse:
        """A refusal before authentication (unknown path, wrong method): not audited, but
        budgeted per source like bad signatures (a budget of its own, so that it does not
        eat into the audit of authentication failures): a flood of them is paced and not
        logged line by line either."""
        admitted, _ = self._refusals.admit(req.source)
        if not admitted:
            return XksResponse(*wire.error_body_for(exc), None, name, flooding=True)
        return self._unaudited(exc, name)

    def _error(self, exc: KmsError, call: _Call) -> XksResponse:
        """The error answer to ``call``, with its audit event."""
        return XksResponse(*wire.error_body_for(exc), self._event(call, exc), call.name)

    @staticmethod
    def _unaudited(exc: KmsError, name: str) -> XksResponse:
        """An error answer before the request names a key store: no audit record."""
        return XksResponse(*wire.error_body_for(exc), None, name)

