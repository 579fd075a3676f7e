"""Configuration from the environment (design §5), each value with a one-machine default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kms.errors import ValidationError

# Labels of the service's own HSM objects.
HEALTH_KEY_LABEL = "kms-health"
AUDIT_SIGNING_KEY_LABEL = "kms-audit-signing"
CREDENTIAL_KEY_LABEL = "kms-credentials"


@dataclass(frozen=True)
class Settings:
    """Everything the KMS reads from its environment, resolved once at start-up."""

    home: Path
    database_url: str
    pkcs11_module: str | None
    token_label: str
    softhsm_conf: Path
    own_softhsm_conf: bool  # SOFTHSM2_CONF was not set: we manage the token under home
    pin_file: Path
    env: Mapping[str, str] = field(repr=False, default_factory=dict)
    allow_short_deletion: bool = False  # KMS_DEV_ALLOW_SHORT_DELETION=1: 0-6 day waits
    checkpoint_interval_s: float = 10.0
    audit_origin: str = "kms.local/audit"
    fleet_size: int = 1  # KMS_FLEET_SIZE: replicas behind the XKS endpoint (health answer)
    # KMS_AUDIT_WRITER: where `kms serve` commits audit records ("process": a writer
    # process, kms/audit/writer_process.py; "thread": a thread of the server process).
    audit_writer: str = "process"
    # KMS_HSM_WORKER: where `kms serve` makes the XKS encrypt and decrypt calls ("process":
    # an HSM worker process, kms/hsmproc/; "off": on the event loop, as the CLI does).
    hsm_worker: str = "process"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("KMS_HOME", "./var")).resolve()
        database_url = env.get("KMS_DATABASE_URL") or f"sqlite:///{home / 'kms.db'}"
        conf = env.get("SOFTHSM2_CONF")
        try:
            interval = float(env.get("KMS_CHECKPOINT_INTERVAL", "10"))
        except ValueError:
            raise ValidationError("KMS_CHECKPOINT_INTERVAL must be a number of seconds") from None
        return cls(
            home=home,
            database_url=database_url,
            pkcs11_module=env.get("KMS_PKCS11_MODULE") or None,
            token_label=env.get("KMS_PKCS11_TOKEN_LABEL", "kms"),
            softhsm_conf=Path(conf) if conf else home / "softhsm" / "softhsm2.conf",
            own_softhsm_conf=not conf,
            pin_file=Path(env.get("KMS_PKCS11_PIN_FILE") or home / "pkcs11.pin"),
            env=env,
            allow_short_deletion=env.get("KMS_DEV_ALLOW_SHORT_DELETION") == "1",
            checkpoint_interval_s=interval,
            audit_origin=env.get("KMS_AUDIT_ORIGIN", "kms.local/audit"),
            fleet_size=_positive_int(env.get("KMS_FLEET_SIZE", "1"), "KMS_FLEET_SIZE"),
            audit_writer=_audit_writer(env.get("KMS_AUDIT_WRITER", "process")),
            hsm_worker=_choice(env.get("KMS_HSM_WORKER", "process"), "KMS_HSM_WORKER",
                               ("process", "off")),
        )

    def pin_env(self) -> dict[str, str]:
        """The environment :func:`hsm.load_pin` reads: the PIN itself or its file."""
        if self.env.get("KMS_PKCS11_PIN"):
            return {"KMS_PKCS11_PIN": self.env["KMS_PKCS11_PIN"]}
        return {"KMS_PKCS11_PIN_FILE": str(self.pin_file)}


def _positive_int(text: str, name: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValidationError(f"{name} must be a positive integer")
    return int(text)


def _choice(text: str, name: str, allowed: tuple[str, ...]) -> str:
    if text not in allowed:
        raise ValidationError(f"{name} must be " + " or ".join(f"'{a}'" for a in allowed))
    return text


def _audit_writer(text: str) -> str:
    if text not in ("process", "thread"):
        raise ValidationError("KMS_AUDIT_WRITER must be 'process' or 'thread'")
    return text
