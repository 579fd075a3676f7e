"""Typed errors of the HSM layer.

Every PKCS#11 exception is translated into one of these before it leaves ``hsm/``; callers
never see ``pkcs11`` exception types. Messages never contain key material, PINs or data.
"""

from __future__ import annotations


class HsmError(Exception):
    """Base of all HSM-layer errors."""


class HsmUnavailable(HsmError):
    """The token cannot be reached or keeps failing (device error, token removed, ...)."""


class HsmConfigError(HsmError):
    """The module, token or PIN configuration is wrong (missing module, bad PIN, no token)."""


class MechanismUnsupported(HsmConfigError):
    """The token lacks a mechanism this service needs; the message names the missing ones."""


class KeyNotFound(HsmError):
    """No object with this label exists on a token that is otherwise reachable."""


class DuplicateLabel(HsmError):
    """An object with this label exists already (labels are kept unique by this layer)."""


class InvalidCiphertext(HsmError):
    """A decryption failed: wrong key, IV, AAD, tag or ciphertext. Deliberately opaque."""


class PermissionDenied(HsmError):
    """The token refused the operation for this key (usage not permitted, not logged in)."""


class RebuildDeferred(Exception):
    """Inside :func:`hsm.pkcs11_hsm.no_rebuild`, the call would first have to rebuild the
    connection (finalize and initialize the module, log in, open sessions: tens of ms, all
    other calls waiting). Nothing was attempted; retry the call where blocking is allowed.
    Not an :class:`HsmError`: nothing has failed."""
