"""XKS SigV4 credentials: generation, validation, and the AWS console upload file.

Spec details this module relies on (XKS Proxy API spec v1.0.3, "Appendix A" and "XKS Proxy
Configuration in AWS KMS Console"):

* access key id: 20-30 characters of ``A-Z`` and ``2-7`` (the Base32 alphabet, no ``=``),
  random, revealing nothing about the secret. We generate 20 characters (100 bits).
* secret access key: "a hard-to-guess UTF-8 string with at least 256-bits of entropy";
  KMS accepts ``A-Za-z0-9+/=``, length 43-64. We generate Base64 of 32 random bytes
  (44 characters, 256 bits).
* ``XksProxyUriPath`` is ``[/<prefix>]/kms/xks/v1``, at most 128 characters of
  ``A-Za-z0-9/_-``.

Entropy cannot be measured from one string. :func:`validate_secret_access_key` enforces the
alphabet and length and rejects secrets that *cannot* hold 256 bits (length x log2 of the
alphabet they appear to be drawn from: hex, Base64, or the character classes present) or
that repeat few characters (a typed password, ``AAAA...``). This is a sanity check, not a
proof; use :func:`generate_secret_access_key` whenever possible.
"""

from __future__ import annotations

import base64
import hmac
import math
import re
import secrets
from typing import Any, NoReturn

from kms.errors import ValidationError

__all__ = [
    "ACCESS_KEY_ID_ALPHABET",
    "Secret",
    "console_upload_json",
    "generate_access_key_id",
    "generate_credential",
    "generate_secret_access_key",
    "validate_access_key_id",
    "validate_secret_access_key",
    "xks_proxy_uri_path",
]

ACCESS_KEY_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
GENERATED_ACCESS_KEY_ID_LENGTH = 20
GENERATED_SECRET_BYTES = 32
MIN_SECRET_ENTROPY_BITS = 256
MIN_SECRET_DISTINCT_CHARACTERS = 10
MAX_URI_PATH_LENGTH = 128
XKS_API_PATH = "/kms/xks/v1"

_ACCESS_KEY_ID_RE = re.compile(r"[A-Z2-7]{20,30}", re.ASCII)
_SECRET_RE = re.compile(r"[A-Za-z0-9+/=]{43,64}", re.ASCII)
_URI_PREFIX_RE = re.compile(r"[A-Za-z0-9/_-]*", re.ASCII)
# Character classes of the secret alphabet and their sizes, for the entropy upper bound.
_SECRET_CLASSES: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"[A-Z]"), 26),
    (re.compile(r"[a-z]"), 26),
    (re.compile(r"[0-9]"), 10),
    (re.compile(r"[+/=]"), 3),
)
_HEX_RE = re.compile(r"[0-9a-fA-F]+", re.ASCII)
_UPPER_RE = re.compile(r"[A-Z]", re.ASCII)
_LOWER_RE = re.compile(r"[a-z]", re.ASCII)


class Secret:
    """A secret string that does not print, compare in variable time, or pickle.

    ``reveal()`` is the one way to get the value back, so every use is greppable.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the secret value. Never log or print what this returns."""
        return self._value

    def reveal_bytes(self) -> bytes:
        """The secret as UTF-8 bytes (what SigV4 uses as the secret access key)."""
        return self._value.encode("utf-8")

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __format__(self, format_spec: str) -> str:
        return str(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("Secret refuses to be pickled")

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret refuses to be pickled")

    def __getstate__(self) -> NoReturn:
        raise TypeError("Secret refuses to be pickled")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


def generate_access_key_id() -> str:
    """A fresh random access key id: 20 characters of ``A-Z2-7`` (100 bits)."""
    return "".join(
        secrets.choice(ACCESS_KEY_ID_ALPHABET) for _ in range(GENERATED_ACCESS_KEY_ID_LENGTH)
    )


def generate_secret_access_key() -> Secret:
    """A fresh secret: Base64 (standard, padded) of 32 random bytes, 44 characters."""
    return Secret(base64.b64encode(secrets.token_bytes(GENERATED_SECRET_BYTES)).decode("ascii"))


def generate_credential() -> tuple[str, Secret]:
    """A fresh ``(access_key_id, secret_access_key)`` pair."""
    return generate_access_key_id(), generate_secret_access_key()


def validate_access_key_id(access_key_id: str) -> str:
    """Return ``access_key_id`` if it is 20-30 characters of ``A-Z2-7``; else ValidationError."""
    if not isinstance(access_key_id, str) or _ACCESS_KEY_ID_RE.fullmatch(access_key_id) is None:
        raise ValidationError("An access key id must be 20-30 characters of A-Z and 2-7.")
    return access_key_id


def _entropy_upper_bound_bits(value: str) -> float:
    """An upper bound on the entropy ``value`` can carry, from the alphabet it appears to use.

    All hex digits: 16 symbols. Upper and lower case letters together: the Base64 alphabet
    (64). Otherwise the sum of the character classes present. A random 43-character Base64
    string almost surely has both cases (the chance it lacks one is about 1e-10), so real
    generated secrets pass; ``openssl rand -hex 32`` (64 hex characters) passes too.
    """
    if _HEX_RE.fullmatch(value) is not None:
        alphabet = 16
    elif _UPPER_RE.search(value) is not None and _LOWER_RE.search(value) is not None:
        alphabet = 64
    else:
        alphabet = sum(size for pattern, size in _SECRET_CLASSES if pattern.search(value))
    return len(value) * math.log2(alphabet) if alphabet > 1 else 0.0


def validate_secret_access_key(secret: Secret | str) -> Secret:
    """Check a secret access key against the XKS rules and return it as a :class:`Secret`.

    43-64 characters of ``A-Za-z0-9+/=``, an apparent alphabet large enough to hold 256 bits
    (see :func:`_entropy_upper_bound_bits`), and at least 10 distinct characters. The error
    message never contains the secret.
    """
    value = secret.reveal() if isinstance(secret, Secret) else secret
    if not isinstance(value, str) or _SECRET_RE.fullmatch(value) is None:
        raise ValidationError(
            "A secret access key must be 43-64 characters of A-Z, a-z, 0-9, '+', '/' and '='."
        )
    if (
        _entropy_upper_bound_bits(value) < MIN_SECRET_ENTROPY_BITS
        or len(set(value)) < MIN_SECRET_DISTINCT_CHARACTERS
    ):
        raise ValidationError(
            "The secret access key cannot hold 256 bits of entropy; "
            "generate one (e.g. Base64 of 32 random bytes)."
        )
    return secret if isinstance(secret, Secret) else Secret(value)


def xks_proxy_uri_path(uri_path_prefix: str) -> str:
    """``/<prefix>/kms/xks/v1`` for a store's prefix (``""`` gives ``/kms/xks/v1``).

    Leading and trailing slashes of the prefix are ignored. ValidationError if the result has
    characters other than ``A-Za-z0-9/_-``, an empty segment, or more than 128 characters.
    """
    if not isinstance(uri_path_prefix, str):
        raise ValidationError("The URI path prefix must be a string.")
    prefix = uri_path_prefix.strip("/")
    path = f"/{prefix}{XKS_API_PATH}" if prefix else XKS_API_PATH
    if _URI_PREFIX_RE.fullmatch(prefix) is None or "//" in path or len(path) > MAX_URI_PATH_LENGTH:
        raise ValidationError(
            "The XKS URI path must be at most 128 characters of A-Z, a-z, 0-9, '/', '_' and '-'."
        )
    return path


def console_upload_json(
    uri_path_prefix: str, access_key_id: str, secret: Secret | str
) -> dict[str, Any]:
    """The JSON object the AWS KMS console accepts as an XKS proxy configuration file.

    ``{"XksProxyUriPath": "/<prefix>/kms/xks/v1", "XksProxyAuthenticationCredential":
    {"AccessKeyId": ..., "RawSecretAccessKey": ...}}``. The result holds the secret in
    clear: show it once, never log it.
    """
    path = xks_proxy_uri_path(uri_path_prefix)
    validate_access_key_id(access_key_id)
    checked = validate_secret_access_key(secret)
    return {
        "XksProxyUriPath": path,
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": access_key_id,
            "RawSecretAccessKey": checked.reveal(),
        },
    }
