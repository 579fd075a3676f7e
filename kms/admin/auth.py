"""Bearer-token authentication and role checks for the admin API.

Only ``Authorization: Bearer kmsat_...`` is accepted. Anything else (no header, another
scheme such as an XKS SigV4 ``AWS4-HMAC-SHA256`` signature, an unknown, expired or revoked
token) is one opaque 401; a valid token whose role does not allow the call is a 403.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.security import HTTPBearer

from kms.audit.record import Actor, ActorKind
from kms.errors import AccessDeniedError, AuthenticationFailedError
from kms.tokens import Role, TokenService

#: Only for the OpenAPI document (the ``bearerAuth`` security scheme); the check itself is
#: :meth:`Authenticator.authenticate`, run before any parameter is parsed.
bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearerAuth", bearerFormat="kmsat_<random>",
    description="An admin API token from `kms tokens create NAME --role admin|auditor`.")

#: The audit actor of a request whose token could not be verified (not a valid token name).
UNAUTHENTICATED = Actor(kind=ActorKind.ADMIN_TOKEN, id="(unauthenticated)")
MAX_HEADER = 512


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name and role (never the token)."""

    name: str
    role: Role
    expires_at: str | None

    @property
    def actor(self) -> Actor:
        return Actor(kind=ActorKind.ADMIN_TOKEN, id=self.name)


class Authenticator:
    def __init__(self, tokens: TokenService) -> None:
        self.tokens = tokens

    def identify(self, authorization: str | None) -> Principal:
        """The caller, if its ``Authorization`` header holds a valid bearer token."""
        if authorization is None or len(authorization) > MAX_HEADER:
            raise AuthenticationFailedError("a valid bearer token is required")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailedError("a valid bearer token is required")
        info = self.tokens.verify(token)
        return Principal(info.name, info.role, info.expires_at)

    @staticmethod
    def authorize(principal: Principal, needed: Role) -> None:
        """AccessDeniedError unless the caller's role allows what ``needed`` may do."""
        if not principal.role.allows(needed):
            raise AccessDeniedError(f"the {principal.role.value} role cannot do this")
