"""The one typed error hierarchy of the KMS.

Every error a client can see is a subclass of :class:`KmsError` and carries the XKS
``errorName`` and HTTP status it maps to (shared/xks-notes.md, "Errors"). The HTTP layer
turns these into ``{"errorName", "errorMessage"}`` bodies; anything that is not a
``KmsError`` becomes a 500 ``InternalException`` without details. Messages must never hold
plaintext, key material, AAD, PINs or secrets.
"""

from __future__ import annotations


class KmsError(Exception):
    """Base of all errors that may be shown to a client."""

    error_name: str = "InternalException"
    http_status: int = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.error_name)
        self.message = message or self.error_name


class ValidationError(KmsError):
    error_name = "ValidationException"
    http_status = 400


class InvalidStateError(KmsError):
    error_name = "InvalidStateException"
    http_status = 400


class InvalidCiphertextError(KmsError):
    error_name = "InvalidCiphertextException"
    http_status = 400


class InvalidKeyUsageError(KmsError):
    error_name = "InvalidKeyUsageException"
    http_status = 400


class AuthenticationFailedError(KmsError):
    error_name = "AuthenticationFailedException"
    http_status = 401


class AccessDeniedError(KmsError):
    error_name = "AccessDeniedException"
    http_status = 403


class KeyNotFoundError(KmsError):
    error_name = "KeyNotFoundException"
    http_status = 404


class InvalidUriPathError(KmsError):
    error_name = "InvalidUriPathException"
    http_status = 404


class ConflictError(KmsError):
    """An object with this name exists already (admin API / CLI only)."""

    error_name = "ConflictException"
    http_status = 409


class ThrottlingError(KmsError):
    error_name = "ThrottlingException"
    http_status = 429


class UnsupportedOperationError(KmsError):
    error_name = "UnsupportedOperationException"
    http_status = 501


class DependencyTimeoutError(KmsError):
    """The HSM, the database or the audit log could not do its part (fail closed)."""

    error_name = "DependencyTimeoutException"
    http_status = 503


class InternalError(KmsError):
    error_name = "InternalException"
    http_status = 500
