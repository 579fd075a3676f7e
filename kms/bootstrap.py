"""``kms init``: everything a fresh machine needs, idempotently.

1. ``$KMS_HOME`` (mode 0700).
2. When ``SOFTHSM2_CONF`` is not set (the default), our own SoftHSM2 token directory under
   ``$KMS_HOME/softhsm`` with the token ``$KMS_PKCS11_TOKEN_LABEL``, made by
   ``softhsm-setup/create-token.sh`` with a generated PIN and SO PIN (0600 files) unless
   ``KMS_PKCS11_PIN`` / ``KMS_PKCS11_PIN_FILE`` name one.
3. The service's own HSM keys: the health key, the audit signing key, the credential key.
4. The database schema (migrations), the audit log head, the key store ``default``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from hsm import AesUsage, HsmError
from hsm.interface import Hsm
from kms.audit.log import init_head
from kms.db.engine import make_engine
from kms.db.migrations import migrate
from kms.errors import ConflictError, DependencyTimeoutError, KeyNotFoundError, ValidationError
from kms.keys.model import URI_PREFIX_RE
from kms.keys.registry import Registry
from kms.runtime import open_hsm
from kms.settings import (
    AUDIT_SIGNING_KEY_LABEL,
    CREDENTIAL_KEY_LABEL,
    HEALTH_KEY_LABEL,
    Settings,
)

ROOT = Path(__file__).resolve().parent.parent
CREATE_TOKEN = ROOT / "softhsm-setup" / "create-token.sh"
DEFAULT_STORE = "default"
DEFAULT_URI_PREFIX = "xks"


@dataclass(frozen=True)
class InitReport:
    home: str
    database_url: str
    softhsm_conf: str
    token_label: str
    store: str
    uri_prefix: str
    schema_version: int


def _secret_file(path: Path) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    return path


def ensure_token(settings: Settings) -> None:
    """Create our SoftHSM token when we manage the SoftHSM config (no SOFTHSM2_CONF)."""
    if not settings.own_softhsm_conf:
        return
    if shutil.which("softhsm2-util") is None:
        raise ValidationError("softhsm2-util not found: run `make install`")
    env = dict(os.environ)
    env.pop("SOFTHSM2_CONF", None)
    if settings.env.get("KMS_PKCS11_PIN"):
        env["SOFTHSM_PIN"] = settings.env["KMS_PKCS11_PIN"]
    else:
        env["SOFTHSM_PIN_FILE"] = str(_secret_file(settings.pin_file))
    env["SOFTHSM_SO_PIN_FILE"] = str(_secret_file(settings.softhsm_conf.parent / "so.pin"))
    result = subprocess.run(
        [str(CREATE_TOKEN), str(settings.softhsm_conf.parent), settings.token_label],
        env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DependencyTimeoutError("could not create the SoftHSM token: "
                                     + result.stderr.strip()[:300])


def ensure_service_keys(hsm: Hsm) -> None:
    try:
        for label in (HEALTH_KEY_LABEL, CREDENTIAL_KEY_LABEL):
            if not hsm.has_key(label):
                hsm.generate_aes_key(label, [AesUsage.ENCRYPT, AesUsage.DECRYPT])
        try:
            hsm.public_key_pem(AUDIT_SIGNING_KEY_LABEL)
        except HsmError:
            hsm.generate_ec_signing_key(AUDIT_SIGNING_KEY_LABEL)
    except HsmError as exc:
        raise DependencyTimeoutError(f"HSM set-up failed: {type(exc).__name__}") from None


def ensure_database(engine: Engine, uri_prefix: str | None) -> tuple[int, str]:
    from datetime import UTC, datetime

    version = migrate(engine)
    with engine.begin() as conn:
        init_head(conn)
    registry = Registry(engine)
    prefix = uri_prefix or DEFAULT_URI_PREFIX
    if not URI_PREFIX_RE.fullmatch(prefix.strip("/")):
        raise ValidationError("the URI prefix is 1-100 characters of A-Za-z0-9/_-")
    prefix = prefix.strip("/")
    try:
        store = registry.get_store(DEFAULT_STORE)
        if uri_prefix is not None and store.uri_prefix != prefix:
            registry.set_uri_prefix(DEFAULT_STORE, prefix)
    except KeyNotFoundError:
        with contextlib.suppress(ConflictError):  # made concurrently by another `kms init`
            registry.create_store(DEFAULT_STORE, prefix, datetime.now(UTC))
    return version, registry.get_store(DEFAULT_STORE).uri_prefix


def run_init(settings: Settings, uri_prefix: str | None = None) -> InitReport:
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    ensure_token(settings)
    hsm = open_hsm(settings)
    try:
        ensure_service_keys(hsm)
    finally:
        hsm.close()
    engine = make_engine(settings.database_url)
    try:
        version, prefix = ensure_database(engine, uri_prefix)
    finally:
        engine.dispose()
    return InitReport(str(settings.home), settings.database_url, str(settings.softhsm_conf),
                      settings.token_label, DEFAULT_STORE, prefix, version)
