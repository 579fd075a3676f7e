"""The token service: create, list, revoke and verify admin API bearer tokens.

A token is ``kmsat_`` followed by 32 random bytes (URL-safe Base64, 256 bits), shown once
at creation. Only its SHA-256 is stored: with 256 bits of entropy there is nothing to
brute-force, so a slow password hash would add latency and no security. Verification
looks the hash up (an indexed, unique column) and then compares it in constant time.

Roles (docs/operations.md, "Tokens and roles"):

* ``admin``: key and key-store lifecycle, XKS credentials, tokens; everything ``auditor`` can.
* ``auditor``: read keys, stores and states, export the audit log, read checkpoints.

Token creation and revocation are audited (``token.create`` / ``token.revoke``) with the
actor that did it; the token itself never reaches the audit log, a log line or an error.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from kms.audit.event import AuditEvent, AuditSink
from kms.audit.record import Actor, Operation, Outcome
from kms.clock import Clock, iso, parse_iso
from kms.db import schema as t
from kms.db.engine import read_only
from kms.errors import (
    AuthenticationFailedError,
    ConflictError,
    DependencyTimeoutError,
    KeyNotFoundError,
    ValidationError,
)

TOKEN_PREFIX = "kmsat_"  # noqa: S105 - a format prefix, not a secret
TOKEN_BYTES = 32
TOKEN_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_TOKEN_LENGTH = 256
MAX_EXPIRY_DAYS = 3650


class Role(enum.Enum):
    ADMIN = "admin"
    AUDITOR = "auditor"

    def allows(self, needed: Role) -> bool:
        """Whether a holder of this role may do what ``needed`` may (admin ⊇ auditor)."""
        return self is Role.ADMIN or self is needed


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Everything about a token except the token: safe to print and to log."""

    name: str
    role: Role
    created_at: str
    expires_at: str | None
    revoked: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role.value, "createdAt": self.created_at,
                "expiresAt": self.expires_at, "revoked": self.revoked}


def hash_token(token: str) -> str:
    """The stored form of a token: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_token_name(name: str) -> str:
    if not TOKEN_NAME_RE.fullmatch(name):
        raise ValidationError("a token name is 1-64 characters of A-Za-z0-9._-")
    return name


def _row_info(row: Any) -> TokenInfo:
    return TokenInfo(row.name, Role(row.role), row.created_at, row.expires_at,
                     bool(row.revoked))


class TokenService:
    """Admin API tokens in the ``admin_tokens`` table."""

    def __init__(self, engine: Engine, audit: AuditSink, clock: Clock) -> None:
        self.engine = engine
        self.audit = audit
        self.clock = clock

    def create(self, name: str, role: Role, actor: Actor, *,
               expires_in_days: int | None = None) -> tuple[TokenInfo, str]:
        """Create a token; returns its description and the token (the only time it exists
        outside the caller's hands)."""
        check_token_name(name)
        if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
            raise ValidationError(f"the expiry is 1 to {MAX_EXPIRY_DAYS} days")
        now = self.clock()
        expires = None if expires_in_days is None else iso(now + timedelta(days=expires_in_days))
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(select(t.admin_tokens.c.name)
                                      .where(t.admin_tokens.c.name == name)).first()
                if exists is not None:
                    raise ConflictError(f"a token named {name!r} exists already")
                conn.execute(t.admin_tokens.insert().values(
                    name=name, role=role.value, token_hash=hash_token(token),
                    created_at=iso(now), expires_at=expires, revoked=False))
        except IntegrityError:
            raise ConflictError(f"a token named {name!r} exists already") from None
        except OperationalError:
            raise DependencyTimeoutError("the database is unavailable") from None
        self.audit.append(AuditEvent(
            op=Operation.TOKEN_CREATE, outcome=Outcome.OK, actor=actor,
            detail={"token_name": name, "role": role.value, "expires_at": expires}))
        return TokenInfo(name, role, iso(now), expires, False), token

    def list(self) -> list[TokenInfo]:
        try:
            with read_only(self.engine) as conn:
                rows = conn.execute(select(t.admin_tokens)
                                    .order_by(t.admin_tokens.c.name)).all()
        except OperationalError:
            raise DependencyTimeoutError("the database is unavailable") from None
        return [_row_info(r) for r in rows]

    def get(self, name: str) -> TokenInfo:
        for info in self.list():
            if info.name == name:
                return info
        raise KeyNotFoundError(f"no token named {name!r}")

    def revoke(self, name: str, actor: Actor) -> TokenInfo:
        """Revoke a token: refused from the next request on, in every process."""
        check_token_name(name)
        try:
            with self.engine.begin() as conn:
                n = conn.execute(update(t.admin_tokens).where(t.admin_tokens.c.name == name)
                                 .values(revoked=True)).rowcount
        except OperationalError:
            raise DependencyTimeoutError("the database is unavailable") from None
        if n == 0:
            raise KeyNotFoundError(f"no token named {name!r}")
        self.audit.append(AuditEvent(op=Operation.TOKEN_REVOKE, outcome=Outcome.OK,
                                     actor=actor, detail={"token_name": name}))
        return self.get(name)

    def verify(self, token: str) -> TokenInfo:
        """The token's description if it is valid now; else AuthenticationFailedError.

        One opaque error for every reason (unknown, revoked, expired, malformed), so a
        caller learns nothing about which tokens exist. Read from the database on every
        call: a revocation applies to the next request.
        """
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationFailedError("invalid bearer token")
        digest = hash_token(token)
        try:
            with read_only(self.engine) as conn:
                row = conn.execute(select(t.admin_tokens)
                                   .where(t.admin_tokens.c.token_hash == digest)).first()
        except OperationalError:
            raise DependencyTimeoutError("the database is unavailable") from None
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            raise AuthenticationFailedError("invalid bearer token")
        info = _row_info(row)
        if info.revoked:
            raise AuthenticationFailedError("invalid bearer token")
        if info.expires_at is not None and parse_iso(info.expires_at) <= self.clock():
            raise AuthenticationFailedError("invalid bearer token")
        return info
