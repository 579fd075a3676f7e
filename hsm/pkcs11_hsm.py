"""The HSM over PKCS#11 (python-pkcs11). The only module in the project that imports pkcs11.

Why it looks the way it does:

* python-pkcs11 always calls ``C_Initialize(NULL)``: the module may then assume that it is
  never entered by two threads at once, and SoftHSM2 aborts the process when it is
  (shared/facts.md). So every call into a loaded module runs under one lock per module
  path (:func:`module_lock`), whatever the session.
* Login is per application: we log in once on the first session and open the rest of the
  bounded session pool without a PIN.
* Every mechanism and every template attribute is named; python-pkcs11's defaults (AES
  CBC_PAD, extractable keys) are never used.
* IVs are generated here (``os.urandom``, 96 bits, per NIST SP 800-38D §8.2.2 random
  construction), never accepted from a caller.
* After a device or session error the connection is rebuilt (``lib.reinitialize()``, a new
  login, new sessions) with bounded retries; while the token stays unreachable or keeps
  failing, calls fail fast with :class:`HsmUnavailable` instead of hanging, and the
  connection is rebuilt at most once per RECONNECT_BACKOFF_S. Inside :func:`no_rebuild` (an
  event loop) a due rebuild raises :class:`RebuildDeferred` for the caller to retry elsewhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pkcs11
import pkcs11.exceptions as pe
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from hsm.errors import (
    DuplicateLabel,
    HsmConfigError,
    HsmError,
    HsmUnavailable,
    InvalidCiphertext,
    KeyNotFound,
    MechanismUnsupported,
    PermissionDenied,
    RebuildDeferred,
)
from hsm.pin import Pin
from hsm.types import (
    AES_KEY_BITS,
    GCM_IV_BYTES,
    GCM_TAG_BYTES,
    AesUsage,
    GcmCiphertext,
    HealthReport,
    HealthStatus,
    KeyAttributes,
)

T = TypeVar("T")

# The mechanisms this service uses; checked at start-up.
REQUIRED_MECHANISMS: dict[str, Mechanism] = {
    "CKM_AES_KEY_GEN": Mechanism.AES_KEY_GEN,
    "CKM_AES_GCM": Mechanism.AES_GCM,
    "CKM_EC_KEY_PAIR_GEN": Mechanism.EC_KEY_PAIR_GEN,
    "CKM_ECDSA": Mechanism.ECDSA,
}

# Errors after which the connection (sessions, login, maybe the module) must be rebuilt.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pe.DeviceError,
    pe.DeviceRemoved,
    pe.DeviceMemory,
    pe.SessionHandleInvalid,
    pe.SessionClosed,
    pe.TokenNotPresent,
    pe.TokenNotRecognised,
    pe.UserNotLoggedIn,
    pe.NoSuchToken,
    pe.SlotIDInvalid,
    pe.GeneralError,
    pe.FunctionFailed,
    pe.HostMemory,
)
_PERMISSION_ERRORS: tuple[type[BaseException], ...] = (
    pe.FunctionRejected,
    pe.KeyHandleInvalid,
    pe.KeyTypeInconsistent,
    pe.MechanismInvalid,
    pe.PinIncorrect,
    pe.PinLocked,
)

# A slow round trip makes the token DEGRADED rather than ACTIVE (XKS healthStatus).
DEGRADED_LATENCY_MS = 100.0
# While reconnecting keeps failing, or the rebuilt connection fails again at once, calls
# fail fast for this long before trying again.
RECONNECT_BACKOFF_S = 0.1
# Inside no_rebuild() (an event loop), the longest wait for the module lock before the call
# is deferred to a worker thread (RebuildDeferred): another thread's rebuild holds it longer.
LOOP_LOCK_WAIT_S = 0.005

_NO_REBUILD: contextvars.ContextVar[bool] = contextvars.ContextVar("hsm_no_rebuild",
                                                                  default=False)


class no_rebuild:
    """Calls made inside raise :class:`RebuildDeferred` instead of rebuilding a broken
    connection themselves: for a caller that must not block that long (an event loop),
    which then retries the call on a worker thread. While the rebuild is backing off
    (RECONNECT_BACKOFF_S) calls still fail fast with HsmUnavailable, as everywhere.

    A class rather than a ``@contextmanager`` generator (a third of the cost: the event
    loop enters it twice per XKS request)."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _NO_REBUILD.set(True)

    def __exit__(self, *exc: object) -> None:
        _NO_REBUILD.reset(self._token)


@dataclass
class _ModuleState:
    """Per loaded module: the lock around every call, and how often it was reinitialized.

    ``lib.reinitialize()`` invalidates the sessions of every user of the module in this
    process; the generation lets the others just reopen their sessions instead of
    reinitializing again (which would invalidate the first one's, and so on).
    """

    lock: threading.RLock = field(default_factory=threading.RLock)
    generation: int = 0
    rebuilding: bool = False  # a connection rebuild holds the lock (read without it)


_MODULES: dict[str, _ModuleState] = {}
_MODULES_GUARD = threading.Lock()


def _module_state(module_path: str) -> _ModuleState:
    real = os.path.realpath(module_path)
    with _MODULES_GUARD:
        state = _MODULES.get(real)
        if state is None:
            state = _MODULES[real] = _ModuleState()
        return state


def module_lock(module_path: str) -> threading.RLock:
    """The one lock for every call into the module loaded from ``module_path``."""
    return _module_state(module_path).lock


def find_softhsm_module() -> str | None:
    """The SoftHSM2 library in the places Debian and other systems install it."""
    for path in (
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
    ):
        if os.path.exists(path):
            return path
    return None


def _aes_template(label: str, usages: Collection[AesUsage]) -> dict[Attribute, Any]:
    return {
        Attribute.LABEL: label,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.MODIFIABLE: False,
        Attribute.ENCRYPT: AesUsage.ENCRYPT in usages,
        Attribute.DECRYPT: AesUsage.DECRYPT in usages,
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
        Attribute.SIGN: False,
        Attribute.VERIFY: False,
        Attribute.DERIVE: False,
    }


def _ec_templates(label: str) -> tuple[dict[Attribute, Any], dict[Attribute, Any]]:
    public = {
        Attribute.LABEL: label,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
        Attribute.DERIVE: False,
    }
    private = {
        Attribute.LABEL: label,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.MODIFIABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
    return public, private


@dataclass
class _Session:
    """One PKCS#11 session and the key objects found through it (handles are per session)."""

    session: Any
    keys: dict[tuple[str, ObjectClass], Any] = field(default_factory=dict)


class _Connection:
    """A logged-in token with its session pool. Replaced wholesale after a device error."""

    def __init__(self, lib: Any, token_label: str, pin: Pin, pool_size: int) -> None:
        self.token = lib.get_token(token_label=token_label)
        login = self.token.open(user_pin=pin.reveal(), rw=True)
        self.sessions: list[_Session] = [_Session(login)]
        for _ in range(pool_size - 1):
            self.sessions.append(_Session(self.token.open(rw=True)))
        self.free: queue.SimpleQueue[_Session] = queue.SimpleQueue()
        for s in self.sessions:
            self.free.put(s)
        self.broken = False

    def forget_label(self, label: str) -> None:
        for s in self.sessions:
            for key in [k for k in s.keys if k[0] == label]:
                del s.keys[key]

    def close(self) -> None:
        for s in self.sessions:
            with contextlib.suppress(pe.PKCS11Error):  # closing a broken session: best effort
                s.session.close()


class Pkcs11Hsm:
    """:class:`hsm.interface.Hsm` over a PKCS#11 module and one token."""

    def __init__(
        self,
        module_path: str,
        token_label: str,
        pin: Pin,
        *,
        pool_size: int = 4,
        max_retries: int = 1,
        check_mechanisms: bool = True,
    ) -> None:
        if pool_size < 1:
            raise HsmConfigError("pool_size must be at least 1")
        self._module_path = module_path
        self._token_label = token_label
        self._pin = pin
        self._pool_size = pool_size
        self._max_retries = max_retries
        self._module = _module_state(module_path)
        self._lock = self._module.lock
        self._conn: _Connection | None = None
        self._generation = -1
        self._next_attempt = 0.0
        self._reconnects = 0
        with self._lock:
            try:
                self._lib = pkcs11.lib(module_path)
            except (RuntimeError, OSError) as exc:
                raise HsmConfigError(f"cannot load the PKCS#11 module {module_path}") from exc
            self._connect()
        if check_mechanisms:
            self.check_mechanisms()

    # -- connection management -------------------------------------------------------

    def _reinitialize(self) -> None:
        """Finalize and initialize the module again. Caller holds the module lock."""
        self._lib.reinitialize()
        self._module.generation += 1

    def _connect(self) -> _Connection:
        """Log in and open the pool. Caller holds the module lock."""
        try:
            try:
                conn = self._open()
            except pe.NoSuchToken:
                # SoftHSM only scans its token directory when initialized: a token made
                # after this process loaded the module needs a reinitialize to be seen.
                self._reinitialize()
                conn = self._open()
        except pe.NoSuchToken:
            raise HsmUnavailable(f"no token labelled {self._token_label!r}") from None
        except (pe.PinIncorrect, pe.PinLocked, pe.PinExpired, pe.PinInvalid):
            raise HsmConfigError("the token refused the PIN") from None
        except _CONNECTION_ERRORS:
            raise HsmUnavailable("the token cannot be opened") from None
        self._conn = conn
        self._generation = self._module.generation
        return conn

    def _open(self) -> _Connection:
        try:
            return _Connection(self._lib, self._token_label, self._pin, self._pool_size)
        except pe.UserAlreadyLoggedIn:
            # Another Pkcs11Hsm in this process on the same token logged in already:
            # login is per application, so the existing login covers our sessions.
            return self._connect_without_login()

    def _connect_without_login(self) -> _Connection:
        conn = _Connection.__new__(_Connection)
        conn.token = self._lib.get_token(token_label=self._token_label)
        conn.sessions = [_Session(conn.token.open(rw=True)) for _ in range(self._pool_size)]
        conn.free = queue.SimpleQueue()
        for s in conn.sessions:
            conn.free.put(s)
        conn.broken = False
        return conn

    def _reconnect(self) -> _Connection:
        """Rebuild everything after a device error. Caller holds the module lock."""
        now = time.monotonic()
        if now < self._next_attempt:
            raise HsmUnavailable("the HSM is unavailable (reconnecting)")
        old, self._conn = self._conn, None
        self._module.rebuilding = True
        try:
            if old is not None:
                old.close()
            if self._generation == self._module.generation:
                self._reinitialize()  # nobody else has since the failure: our turn
            conn = self._connect()
        except (HsmError, pe.PKCS11Error):
            self._next_attempt = time.monotonic() + RECONNECT_BACKOFF_S
            raise HsmUnavailable("the HSM is unavailable") from None
        finally:
            self._module.rebuilding = False
        self._reconnects += 1
        return conn

    def _run(self, op: Callable[[_Connection, _Session], T]) -> T:
        """Run ``op`` under the module lock, rebuilding the connection after device errors.

        One lock acquisition per call: the connection check, taking a session and the
        call itself all happen under it (every call into the module is serialized anyway,
        so a session is always free here; the pool only spares sessions)."""
        attempts = 0
        rebuilt = False
        loop_caller = _NO_REBUILD.get()
        while attempts <= self._max_retries:
            if loop_caller:
                self._acquire_for_loop()
            else:
                self._lock.acquire()
            try:
                conn = self._conn
                if conn is None or conn.broken or self._generation != self._module.generation:
                    if loop_caller and time.monotonic() >= self._next_attempt:
                        raise RebuildDeferred()
                    conn = self._reconnect()
                    rebuilt = True
                attempts += 1
                try:
                    s = conn.free.get_nowait()
                except queue.Empty:  # only a call made from inside a call could see this
                    raise HsmUnavailable("no free HSM session") from None
                try:
                    return op(conn, s)
                except _CONNECTION_ERRORS:
                    conn.broken = True
                    if rebuilt:  # a fresh connection failed at once: no second rebuild
                        break
                except pe.ObjectHandleInvalid:
                    # A cached handle went stale (destroyed elsewhere, or the token
                    # was reloaded): forget cached handles and look the key up again.
                    for sess in conn.sessions:
                        sess.keys.clear()
                except _PERMISSION_ERRORS:
                    raise PermissionDenied("the token refused this operation") from None
                finally:
                    conn.free.put(s)
            finally:
                self._lock.release()
        # Still failing (a module that opens sessions but fails every operation, say):
        # fail fast for a while instead of rebuilding the connection again for this call
        # or the next ones (each rebuild is a C_Finalize/C_Initialize and a login). One
        # attribute store: no lock needed, so an event-loop caller never waits here either.
        self._next_attempt = time.monotonic() + RECONNECT_BACKOFF_S
        raise HsmUnavailable("the HSM is unavailable")

    def _acquire_for_loop(self) -> None:
        """The module lock for a caller inside :func:`no_rebuild` (an event loop), which
        must not wait behind a rebuild of the connection (C_Finalize, C_Initialize and a
        login: tens to hundreds of milliseconds on a busy machine) another thread is doing:
        RebuildDeferred at once while one runs, or once LOOP_LOCK_WAIT_S has passed;
        ordinary calls of other threads (well under a millisecond each) are waited for."""
        if self._module.rebuilding or not self._lock.acquire(timeout=LOOP_LOCK_WAIT_S):
            raise RebuildDeferred()

    def _token_reachable(self, conn: _Connection) -> bool:
        """Distinguish "no such key" from "the token is gone" (both look like NoSuchKey)."""
        try:
            self._lib.get_slots(token_present=True)
            conn.token.slot.get_token()
        except pe.PKCS11Error:
            return False
        return True

    def _find_for(
        self, conn: _Connection, s: _Session, label: str, cls: ObjectClass, method: str
    ) -> Any:
        """Find a key and check that it permits ``method`` (python-pkcs11 only gives a key
        object the methods its CKA_ENCRYPT/DECRYPT/SIGN flags allow)."""
        key = self._find(conn, s, label, cls)
        if not hasattr(key, method):
            raise PermissionDenied(f"the key does not permit {method}")
        return key

    def _find(self, conn: _Connection, s: _Session, label: str, cls: ObjectClass) -> Any:
        cached = s.keys.get((label, cls))
        if cached is not None:
            return cached
        try:
            obj = s.session.get_key(object_class=cls, label=label)
        except pe.NoSuchKey:
            if not self._token_reachable(conn):
                conn.broken = True
                raise HsmUnavailable("the HSM token is not reachable") from None
            raise KeyNotFound(f"no key labelled {label!r}") from None
        except pe.MultipleObjectsReturned:
            raise DuplicateLabel(f"more than one object labelled {label!r}") from None
        s.keys[(label, cls)] = obj
        return obj

    # -- start-up ----------------------------------------------------------------------

    def check_mechanisms(self) -> None:
        """Raise MechanismUnsupported naming every mechanism the token lacks."""

        def op(conn: _Connection, s: _Session) -> set[Mechanism]:
            return set(conn.token.slot.get_mechanisms())

        available = self._run(op)
        missing = [name for name, m in REQUIRED_MECHANISMS.items() if m not in available]
        if missing:
            raise MechanismUnsupported("the token lacks mechanisms: " + ", ".join(missing))

    @property
    def reconnects(self) -> int:
        """How many times the connection was rebuilt (for metrics and tests)."""
        return self._reconnects

    # -- AES keys ------------------------------------------------------------------------

    def generate_aes_key(self, label: str, usages: Collection[AesUsage]) -> None:
        template = _aes_template(label, usages)

        def op(conn: _Connection, s: _Session) -> None:
            for _ in s.session.get_objects({Attribute.LABEL: label}):
                raise DuplicateLabel(f"an object labelled {label!r} exists already")
            key = s.session.generate_key(
                KeyType.AES,
                AES_KEY_BITS,
                store=True,
                mechanism=Mechanism.AES_KEY_GEN,
                template=template,
            )
            s.keys[(label, ObjectClass.SECRET_KEY)] = key

        self._run(op)

    def has_key(self, label: str) -> bool:
        try:
            self._run(lambda c, s: self._find(c, s, label, ObjectClass.SECRET_KEY))
        except KeyNotFound:
            return False
        return True

    def list_aes_keys(self) -> list[str]:
        def op(conn: _Connection, s: _Session) -> list[str]:
            objs = s.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
            return sorted(str(o.label) for o in objs)

        return self._run(op)

    def key_attributes(self, label: str) -> KeyAttributes:
        def op(conn: _Connection, s: _Session) -> KeyAttributes:
            try:
                key = self._find(conn, s, label, ObjectClass.SECRET_KEY)
                key_type = "AES"
            except KeyNotFound:
                key = self._find(conn, s, label, ObjectClass.PRIVATE_KEY)
                key_type = "EC"

            def flag(attr: Attribute) -> bool:
                try:
                    return bool(key[attr])
                except pe.AttributeTypeInvalid:
                    return False

            return KeyAttributes(
                label=label,
                key_type=key_type,
                sensitive=flag(Attribute.SENSITIVE),
                extractable=flag(Attribute.EXTRACTABLE),
                encrypt=flag(Attribute.ENCRYPT),
                decrypt=flag(Attribute.DECRYPT),
                wrap=flag(Attribute.WRAP),
                unwrap=flag(Attribute.UNWRAP),
                sign=flag(Attribute.SIGN),
                verify=flag(Attribute.VERIFY),
                derive=flag(Attribute.DERIVE),
            )

        return self._run(op)

    def destroy_key(self, label: str) -> None:
        def op(conn: _Connection, s: _Session) -> None:
            objs = list(s.session.get_objects({Attribute.LABEL: label}))
            if not objs:
                if not self._token_reachable(conn):
                    conn.broken = True
                    raise HsmUnavailable("the HSM token is not reachable")
                raise KeyNotFound(f"no key labelled {label!r}")
            for obj in objs:
                obj.destroy()
            conn.forget_label(label)

        self._run(op)

    # -- AES-256-GCM -----------------------------------------------------------------------

    def encrypt(self, label: str, plaintext: bytes, aad: bytes) -> GcmCiphertext:
        iv = os.urandom(GCM_IV_BYTES)
        params = pkcs11.GCMParams(iv, aad, GCM_TAG_BYTES * 8)

        def op(conn: _Connection, s: _Session) -> bytes:
            key = self._find_for(conn, s, label, ObjectClass.SECRET_KEY, "encrypt")
            return bytes(
                key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params)
            )

        out = self._run(op)
        return GcmCiphertext(iv=iv, ciphertext=out[:-GCM_TAG_BYTES], tag=out[-GCM_TAG_BYTES:])

    def decrypt(self, label: str, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
        if len(iv) != GCM_IV_BYTES or len(tag) != GCM_TAG_BYTES:
            raise InvalidCiphertext("invalid ciphertext")
        params = pkcs11.GCMParams(iv, aad, GCM_TAG_BYTES * 8)

        def op(conn: _Connection, s: _Session) -> bytes:
            key = self._find_for(conn, s, label, ObjectClass.SECRET_KEY, "decrypt")
            try:
                return bytes(
                    key.decrypt(
                        ciphertext + tag, mechanism=Mechanism.AES_GCM, mechanism_param=params
                    )
                )
            except (pe.EncryptedDataInvalid, pe.EncryptedDataLenRange):
                raise InvalidCiphertext("invalid ciphertext") from None
            except pe.GeneralError:
                # SoftHSM reports a failed GCM tag check as CKR_GENERAL_ERROR, the same code
                # as a lost token: ask the token whether it is still there.
                if self._token_reachable(conn):
                    raise InvalidCiphertext("invalid ciphertext") from None
                raise

        return self._run(op)

    # -- EC P-256 signing --------------------------------------------------------------------

    def generate_ec_signing_key(self, label: str) -> None:
        public_t, private_t = _ec_templates(label)

        def op(conn: _Connection, s: _Session) -> None:
            for _ in s.session.get_objects({Attribute.LABEL: label}):
                raise DuplicateLabel(f"an object labelled {label!r} exists already")
            params = s.session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True,
            )
            params.generate_keypair(
                store=True,
                mechanism=Mechanism.EC_KEY_PAIR_GEN,
                public_template=public_t,
                private_template=private_t,
            )

        self._run(op)

    def sign(self, label: str, message: bytes) -> bytes:
        digest = hashlib.sha256(message).digest()

        def op(conn: _Connection, s: _Session) -> bytes:
            key = self._find_for(conn, s, label, ObjectClass.PRIVATE_KEY, "sign")
            return bytes(key.sign(digest, mechanism=Mechanism.ECDSA))

        raw = self._run(op)
        half = len(raw) // 2
        r, s_ = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        return encode_dss_signature(r, s_)

    def public_key_pem(self, label: str) -> bytes:
        def op(conn: _Connection, s: _Session) -> bytes:
            key = self._find(conn, s, label, ObjectClass.PUBLIC_KEY)
            return bytes(encode_ec_public_key(key))

        der = self._run(op)
        return load_der_public_key(der).public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )

    # -- misc ------------------------------------------------------------------------------

    def random_bytes(self, n: int) -> bytes:
        if n <= 0:
            return b""
        return self._run(lambda c, s: bytes(s.session.generate_random(n * 8)))

    def probe(self, health_key_label: str) -> HealthReport:
        model = "unknown"
        start = time.perf_counter()
        try:
            probe = os.urandom(16)
            ct = self.encrypt(health_key_label, probe, b"health")
            ok = self.decrypt(health_key_label, ct.iv, ct.ciphertext, ct.tag, b"health") == probe
            conn = self._conn
            if conn is not None:
                model = str(conn.token.model).strip() or model
        except KeyNotFound:
            return self._report(HealthStatus.DEGRADED, start, "health key missing", model)
        except HsmError as exc:
            return self._report(HealthStatus.UNAVAILABLE, start, type(exc).__name__, model)
        if not ok:
            return self._report(HealthStatus.UNAVAILABLE, start, "round trip mismatch", model)
        report = self._report(HealthStatus.ACTIVE, start, "ok", model)
        if report.latency_ms > DEGRADED_LATENCY_MS:
            return self._report(HealthStatus.DEGRADED, start, "slow", model)
        return report

    def _report(self, status: HealthStatus, start: float, detail: str, model: str) -> HealthReport:
        return HealthReport(
            status=status,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            detail=detail,
            token_label=self._token_label,
            token_model=model,
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"Pkcs11Hsm(module={self._module_path!r}, token={self._token_label!r})"
