"""Wiring: builds the service objects from :class:`Settings` for the CLI and the server.

Nothing here is a module-level singleton: ``Runtime.open`` returns a fresh object graph,
and tests build their own with injected parts.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from hsm import HsmConfigError, HsmUnavailable, load_pin
from hsm.interface import Hsm
from hsm.pkcs11_hsm import Pkcs11Hsm, find_softhsm_module
from kms.audit.checkpoint import Signer
from kms.audit.log import AuditLog
from kms.clock import Clock, system_clock
from kms.db.engine import is_sqlite, make_engine
from kms.db.migrations import require_current
from kms.errors import DependencyTimeoutError, ValidationError
from kms.hsmproc.channel import WorkerConfig
from kms.keys.registry import Registry
from kms.keys.service import KeyService
from kms.keys.state_cache import (
    EpochFile,
    EpochSource,
    FileEpoch,
    KeyStateCache,
    NotifyEpoch,
)
from kms.metrics import InstrumentedHsm, observe_audit_batch
from kms.settings import AUDIT_SIGNING_KEY_LABEL, Settings
from kms.xks.credential_store import CredentialStore


def module_path(settings: Settings) -> str:
    path = settings.pkcs11_module or find_softhsm_module()
    if path is None:
        raise ValidationError(
            "no PKCS#11 module: install softhsm2 (make install) or set KMS_PKCS11_MODULE")
    return path


def open_hsm(settings: Settings, *, attempts: int = 6) -> Pkcs11Hsm:
    """Open the token, retrying briefly: several workers starting at once on one token
    directory can make SoftHSM report NoSuchToken (shared/facts.md)."""
    if settings.own_softhsm_conf:
        os.environ["SOFTHSM2_CONF"] = str(settings.softhsm_conf)
    pin = load_pin(settings.pin_env())
    path = module_path(settings)
    for attempt in range(attempts):
        try:
            return Pkcs11Hsm(path, settings.token_label, pin)
        except HsmUnavailable:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 + random.random() * 0.2 * (attempt + 1))
    raise HsmConfigError("unreachable")


def epoch_file(settings: Settings) -> EpochFile | None:
    """SQLite only: the file beside the database that announces state changes."""
    if not is_sqlite(settings.database_url):
        return None
    db_path = settings.database_url.split("///", 1)[-1]
    return EpochFile(Path(db_path + ".epoch"))


def epoch_source(settings: Settings, registry: Registry) -> EpochSource:
    file = epoch_file(settings)
    if file is not None:
        return FileEpoch(registry, file)
    dsn = settings.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    return NotifyEpoch(registry, dsn)


def hsm_signer(hsm: Hsm) -> Signer:
    def sign(message: bytes) -> bytes:
        return hsm.sign(AUDIT_SIGNING_KEY_LABEL, message)

    return sign


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    hsm: Hsm
    registry: Registry
    cache: KeyStateCache
    audit: AuditLog
    keys: KeyService
    credentials: CredentialStore
    clock: Clock = field(default=system_clock)
    # How an HSM worker process opens the same token (KMS_HSM_WORKER=process); else None.
    hsm_worker_config: WorkerConfig | None = None

    @classmethod
    def open(cls, settings: Settings, *, hsm: Hsm | None = None,
             clock: Clock = system_clock, audit_writer: str = "thread") -> Runtime:
        """``audit_writer="process"`` (``kms serve``): audit records are committed by a
        writer process, which stamps them with the system clock, not ``clock``."""
        engine = make_engine(settings.database_url)
        try:
            require_current(engine)
        except Exception as exc:
            if isinstance(exc, DependencyTimeoutError):
                raise
            raise DependencyTimeoutError("the database is unavailable") from None
        worker_config = None  # only for an HSM opened here, and only if asked for
        if hsm is None:
            hsm = open_hsm(settings)
            if settings.hsm_worker == "process":
                worker_config = WorkerConfig(module_path(settings), settings.token_label,
                                             load_pin(settings.pin_env()))
        hsm = InstrumentedHsm(hsm)  # kms_hsm_call_duration_seconds
        file = epoch_file(settings)
        sources: list[EpochSource] = []

        def on_change(epoch: int) -> None:
            if file is not None:
                file.touch()
            for source in sources:
                source.observe(epoch)

        registry = Registry(engine, on_change=on_change)
        sources.append(epoch_source(settings, registry))
        cache = KeyStateCache(registry, sources[0])
        audit = AuditLog(engine, clock, origin=settings.audit_origin,
                         key_name=settings.audit_origin,
                         public_key_pem=hsm.public_key_pem(AUDIT_SIGNING_KEY_LABEL),
                         sign=hsm_signer(hsm), on_batch=observe_audit_batch,
                         writer=audit_writer)
        audit.check_integrity()
        keys = KeyService(registry, hsm, cache, audit, clock,
                          allow_short_deletion=settings.allow_short_deletion)
        credentials = CredentialStore(registry, cache, hsm, audit, clock)
        return cls(settings, engine, hsm, registry, cache, audit, keys, credentials, clock,
                   worker_config)

    def close(self) -> None:
        self.audit.close()
        self.cache.close()
        self.hsm.close()
        self.engine.dispose()
