"""Admin API bearer tokens: created once, stored only as SHA-256 hashes, with roles."""

from kms.tokens.service import (
    TOKEN_PREFIX,
    Role,
    TokenInfo,
    TokenService,
    hash_token,
)

__all__ = ["TOKEN_PREFIX", "Role", "TokenInfo", "TokenService", "hash_token"]
