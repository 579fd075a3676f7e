"""The key model: states, usages, versions, and which lifecycle transitions are allowed."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from kms.errors import InvalidStateError, ValidationError

KEY_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
STORE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
URI_PREFIX_RE = re.compile(r"[A-Za-z0-9/_-]{1,100}")


class KeyState(enum.Enum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"  # revoked; reversible
    PENDING_DELETION = "PENDING_DELETION"  # refuses all use; cancel returns it to DISABLED
    DESTROYED = "DESTROYED"  # HSM objects destroyed; irreversible


class KeyUsage(enum.Enum):
    ENCRYPT = "ENCRYPT"
    DECRYPT = "DECRYPT"


class Transition(enum.Enum):
    REVOKE = "revoke"
    ENABLE = "enable"
    SCHEDULE_DELETION = "schedule-deletion"
    CANCEL_DELETION = "cancel-deletion"
    DESTROY = "destroy"
    ROTATE = "rotate"


S = KeyState
# (transition, from state) -> to state. Anything not listed is forbidden. Destroy requires
# the key to be revoked first (DISABLED) or pending deletion: an ENABLED key in use is never
# shredded by one command.
TRANSITIONS: dict[tuple[Transition, KeyState], KeyState] = {
    (Transition.REVOKE, S.ENABLED): S.DISABLED,
    (Transition.ENABLE, S.DISABLED): S.ENABLED,
    (Transition.SCHEDULE_DELETION, S.ENABLED): S.PENDING_DELETION,
    (Transition.SCHEDULE_DELETION, S.DISABLED): S.PENDING_DELETION,
    (Transition.CANCEL_DELETION, S.PENDING_DELETION): S.DISABLED,
    (Transition.DESTROY, S.DISABLED): S.DESTROYED,
    (Transition.DESTROY, S.PENDING_DELETION): S.DESTROYED,
    (Transition.ROTATE, S.ENABLED): S.ENABLED,
}


class InvalidTransitionError(InvalidStateError):
    """A lifecycle change that the key's current state does not allow."""

    http_status = 409


def next_state(transition: Transition, current: KeyState) -> KeyState:
    """The state after ``transition``, or InvalidTransitionError naming both."""
    target = TRANSITIONS.get((transition, current))
    if target is None:
        raise InvalidTransitionError(
            f"cannot {transition.value} a key in state {current.value}"
        )
    return target


def parse_usage(text: str) -> frozenset[KeyUsage]:
    """``"ENCRYPT,DECRYPT"`` -> the usage set; ``""`` is the empty set (a key that does nothing)."""
    parts = [p.strip().upper() for p in text.split(",") if p.strip()]
    try:
        return frozenset(KeyUsage(p) for p in parts)
    except ValueError:
        raise ValidationError("usage must be a comma-separated subset of ENCRYPT,DECRYPT") from None


def format_usage(usage: frozenset[KeyUsage]) -> str:
    return ",".join(u.value for u in sorted(usage, key=lambda u: u.value, reverse=True))


def check_key_id(key_id: str) -> str:
    if not KEY_ID_RE.fullmatch(key_id):
        raise ValidationError("a key id is 1-128 characters of A-Za-z0-9._-")
    return key_id


@dataclass(frozen=True, slots=True)
class KeyVersion:
    version: int
    hsm_label: str
    imported: bool
    created_at: str


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A consistent snapshot of one key and its versions, as read from the registry."""

    key_id: str
    store: str
    usage: frozenset[KeyUsage]
    state: KeyState
    primary_version: int
    min_decrypt_version: int
    deletion_due: str | None
    rules: str | None
    created_at: str
    updated_at: str
    versions: tuple[KeyVersion, ...]
    store_enabled: bool
    description: str | None = None

    def version(self, number: int) -> KeyVersion | None:
        for v in self.versions:
            if v.version == number:
                return v
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "keyId": self.key_id,
            "store": self.store,
            "usage": [u.value for u in (KeyUsage.ENCRYPT, KeyUsage.DECRYPT) if u in self.usage],
            "state": self.state.value,
            "primaryVersion": self.primary_version,
            "minDecryptVersion": self.min_decrypt_version,
            "deletionDue": self.deletion_due,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "storeEnabled": self.store_enabled,
            "description": self.description,
            "versions": [
                {"version": v.version, "imported": v.imported, "createdAt": v.created_at}
                for v in self.versions
            ],
        }


@dataclass(frozen=True, slots=True)
class KeyStore:
    name: str
    uri_prefix: str
    enabled: bool
    throttle_rps: int | None
    created_at: str
