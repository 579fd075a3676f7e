"""The gateway's error hierarchy and the one table that maps it to OpenAI's error shape.

Every error a client sees is a :class:`GatewayError` and becomes
``{"error": {"message", "type", "code", "param": null}}`` with its HTTP status. Messages
never hold prompts, keys or secrets. Errors of the tenant's key service are translated in
:mod:`gateway.tenant_keys` (revoked -> 403, unreachable -> 503).
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status = 500
    type = "api_error"
    code = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code,
                          "param": None}}


class InvalidRequestError(GatewayError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class NotFoundError(GatewayError):
    status, type, code = 404, "invalid_request_error", "not_found"


class MethodNotAllowedError(GatewayError):
    """A method the path does not have; carries the path's ``Allow`` header."""

    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class ConflictError(GatewayError):
    status, type, code = 409, "invalid_request_error", "conflict"


class AuthenticationError(GatewayError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class ModelNotAllowedError(GatewayError):
    status, type, code = 403, "permission_error", "model_not_allowed"


class RateLimitError(GatewayError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class CustomerKeyRevokedError(GatewayError):
    """The tenant's key service refused: the key is revoked, disabled, deleted or denied."""

    status, type, code = 403, "permission_error", "customer_key_revoked"


class CustomerKeyUnreachableError(GatewayError):
    """The tenant's key service did not answer: nothing of this tenant can be decrypted."""

    status, type, code = 503, "api_error", "customer_key_unreachable"


class StoredDataUnreadableError(GatewayError):
    """A blob failed to decrypt (modified, or moved from another tenant's row)."""

    status, type, code = 500, "api_error", "stored_data_unreadable"


class UpstreamError(GatewayError):
    status, type, code = 502, "api_error", "upstream_error"


class NoProviderKeyError(GatewayError):
    status, type, code = 503, "api_error", "no_provider_key"
