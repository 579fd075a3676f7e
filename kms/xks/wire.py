"""XKS proxy API v1 wire formats: request parsing, response bodies, AAD, CDIV. Pure.

Everything here works on bytes and plain values: no HTTP, no HSM, no clock. Parsers take
the raw request body and return frozen dataclasses or raise a :class:`~kms.errors.KmsError`
subclass (never anything else, whatever the input). Builders return JSON bytes.

Spec details relied on (XKS Proxy API spec v1.0.3; section names in quotes):

* "API Operations": ``requestMetadata`` is in every body. ``kmsRequestId`` and
  ``kmsOperation`` are always required and opaque ("MUST NOT perform any validation on its
  structure"); ``awsPrincipalArn`` is required for GetKeyMetadata, Encrypt and Decrypt;
  ``kmsKeyArn`` for Encrypt and Decrypt (optional for GetKeyMetadata: absent on CreateKey).
  Unknown ``kmsOperation`` values "MUST NOT" be rejected; unknown fields are kept (in
  :attr:`RequestMetadata.raw`) for the audit log. ARNs may be 2048 characters long.
* The spec's error table lists ValidationException for "ALL except GetHealthStatus"; AWS's
  own test clients nevertheless expect a 400 ValidationException for a health request with
  missing or empty ``requestMetadata``, so health is validated the same way.
* "Encrypt"/"Decrypt": Base64 is the standard alphabet with padding. The proxy must handle
  4300 bytes of plaintext/ciphertext and 8192 bytes of AAD; a parameter above *our* larger
  limit is 501 UnsupportedOperationException ("a parameter value exceeded the maximum size
  that is currently supported ... beyond the minimum size required"). Our limits:
  plaintext/ciphertext 8192 bytes, AAD 16384 bytes, whole body 64 KiB.
* ``encryptionAlgorithm`` "MUST be AES_GCM"; ``ciphertextDataIntegrityValueAlgorithm``, if
  present, "MUST be SHA_256". IV is 12 or 16 bytes, the tag 16 bytes, ``ciphertextMetadata``
  at most 20 bytes.
* "Encrypt", ciphertextMetadata: the HSM AAD is ``uint16be(len(aad)) || aad ||
  uint8(len(md)) || md`` (absent = length 0), and the behaviour should be versioned inside
  ``ciphertextMetadata``. See :func:`hsm_aad` and :func:`encode_ciphertext_metadata`.
* "Appendix C": CDIV = Base64(SHA-256(aad || ciphertextMetadata || iv || ciphertext ||
  tag)) over decoded bytes, absent fields empty, no lengths. See :func:`cdiv`.
* "Error Codes": the body is ``{"errorName", "errorMessage"}``; the message "MUST be less
  than 512 characters in length and only use printable ASCII characters" (0x20-0x7e).

Error mapping (where the spec leaves room, these are our decisions):

* Body too large (> 64 KiB): 501 UnsupportedOperationError (checked before JSON parsing).
* Body not UTF-8 JSON, not an object, duplicate keys, NaN/Infinity, nesting too deep;
  ``requestMetadata`` missing, empty or not an object; a required field missing or of the
  wrong type; a Base64 field that is not canonical standard padded Base64 (URL-safe,
  unpadded, whitespace, non-zero trailing bits); ``encryptionAlgorithm`` other than
  ``AES_GCM``; a CDIV algorithm other than ``SHA_256``: 400 ValidationError. This holds for
  all four operations, including Decrypt: a request whose *structure* is wrong is malformed.
* A Base64 field longer than our limit (plaintext, ciphertext, AAD): 501
  UnsupportedOperationError. The length check comes first, so an over-long field is 501 even
  if it is also not valid Base64.
* Decrypt with well-formed Base64 whose *decoded content* is wrong (IV not 12 or 16 bytes,
  tag not 16 bytes, ``ciphertextMetadata`` longer than 20 bytes, or one our scheme cannot
  decode): 400 InvalidCiphertextError, the spec's error for a "ciphertext, initialization
  vector, additional authenticated data or authentication tag [that] is corrupted, missing,
  or otherwise invalid". (The AWS reference proxy maps an over-long ``ciphertextMetadata``
  to ValidationException; we treat it as part of the ciphertext blob KMS stored.)
* ``null`` for an optional field means absent (as serde's ``Option`` in the reference proxy).

Binding: :func:`hsm_aad` covers the caller's AAD and ``ciphertextMetadata`` (scheme version
and key version, :func:`encode_ciphertext_metadata`). The key service binds the key id as
well: each key version is its own HSM object, and the key service adds the external key id
and version to the AAD it hands the HSM, so a ciphertext cannot be replayed under another
key or version even if the metadata were rewritten.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

from hsm.frozen import quick_init
from kms.errors import (
    InternalError,
    InvalidCiphertextError,
    KmsError,
    UnsupportedOperationError,
    ValidationError,
)

__all__ = [
    "AES_GCM",
    "CIPHERTEXT_METADATA_SCHEME_V1",
    "MAX_AAD_BYTES",
    "MAX_BODY_BYTES",
    "MAX_CIPHERTEXT_BYTES",
    "MAX_CIPHERTEXT_METADATA_BYTES",
    "MAX_PLAINTEXT_BYTES",
    "SHA_256",
    "CiphertextMetadata",
    "DecryptRequest",
    "EkmFleetDetail",
    "EncryptRequest",
    "HealthRequest",
    "MetadataRequest",
    "RequestMetadata",
    "cdiv",
    "ciphertext_metadata_v1",
    "decode_ciphertext_metadata",
    "decrypt_response",
    "encode_ciphertext_metadata",
    "encrypt_response",
    "error_body",
    "error_body_for",
    "health_response",
    "hsm_aad",
    "metadata_response",
    "parse_decrypt_request",
    "parse_encrypt_request",
    "parse_health_request",
    "parse_metadata_request",
]

AES_GCM = "AES_GCM"
SHA_256 = "SHA_256"
AES_256 = "AES_256"

MAX_BODY_BYTES = 64 * 1024
SPEC_MIN_PLAINTEXT_BYTES = 4300
SPEC_MIN_AAD_BYTES = 8192
MAX_PLAINTEXT_BYTES = 8192
MAX_CIPHERTEXT_BYTES = 8192
MAX_AAD_BYTES = 16384
MAX_CIPHERTEXT_METADATA_BYTES = 20
IV_LENGTHS = frozenset({12, 16})
TAG_LENGTH = 16
MAX_ERROR_MESSAGE_LENGTH = 511
MAX_KEY_USAGE_VALUES = 10
MAX_EKM_FLEET_DETAILS = 10

KEY_STATUSES = frozenset({"ENABLED", "DISABLED"})
EKM_HEALTH_STATUSES = frozenset({"ACTIVE", "DEGRADED", "UNAVAILABLE"})

CIPHERTEXT_METADATA_SCHEME_V1 = 1
_METADATA_V1 = struct.Struct(">BI")  # scheme version, key version
_MAX_KEY_VERSION = 0xFFFFFFFF

_ERROR_NAME_RE = re.compile(r"[A-Z][A-Za-z]{0,62}Exception", re.ASCII)
_NOT_PRINTABLE_ASCII_RE = re.compile(r"[^\x20-\x7e]")

# Spellings in the JSON bodies.
_REQUEST_METADATA = "requestMetadata"


# --------------------------------------------------------------------------- requests


@quick_init
@dataclass(frozen=True, slots=True)
class RequestMetadata:
    """``requestMetadata``: the known fields, plus the whole object (``raw``) for audit."""

    kms_request_id: str
    kms_operation: str
    aws_principal_arn: str | None = None
    kms_key_arn: str | None = None
    kms_via_service: str | None = None
    aws_source_vpc: str | None = None
    aws_source_vpce: str | None = None
    raw: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, hash=False, repr=False
    )


@dataclass(frozen=True, slots=True)
class HealthRequest:
    """GetHealthStatus request body."""

    request_metadata: RequestMetadata


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    """GetKeyMetadata request body."""

    request_metadata: RequestMetadata


@quick_init
@dataclass(frozen=True, slots=True)
class EncryptRequest:
    """Encrypt request body, Base64 fields decoded. ``repr`` never shows plaintext or AAD."""

    request_metadata: RequestMetadata
    plaintext: bytes = field(repr=False)
    additional_authenticated_data: bytes | None = field(repr=False)
    encryption_algorithm: str = AES_GCM
    ciphertext_data_integrity_value_algorithm: str | None = None

    @property
    def wants_cdiv(self) -> bool:
        """Whether the response must carry ``ciphertextDataIntegrityValue``."""
        return self.ciphertext_data_integrity_value_algorithm is not None


@quick_init
@dataclass(frozen=True, slots=True)
class DecryptRequest:
    """Decrypt request body, Base64 fields decoded and sizes checked. ``repr`` hides AAD."""

    request_metadata: RequestMetadata
    ciphertext: bytes = field(repr=False)
    initialization_vector: bytes
    authentication_tag: bytes
    additional_authenticated_data: bytes | None = field(repr=False)
    ciphertext_metadata: bytes | None
    encryption_algorithm: str = AES_GCM


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"JSON constant {name} is not allowed")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # built in C; a repeated key leaves fewer entries than pairs
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


# One decoder and one encoder for every request: json.loads and json.dumps with options
# build a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys,
                            parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def _load_object(body: bytes) -> dict[str, Any]:
    """Size cap, strict UTF-8, strict JSON, must be an object."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ValidationError("The request body must be bytes.")
    if len(body) > MAX_BODY_BYTES:
        raise UnsupportedOperationError(
            f"The request body exceeds the supported maximum of {MAX_BODY_BYTES} bytes."
        )
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("The request body is not valid UTF-8.") from None
    try:
        document = _DECODER.decode(text)
    except (ValueError, RecursionError):
        # RecursionError: the C scanner bounds nesting depth with the interpreter's limit.
        raise ValidationError("The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise ValidationError("The request body must be a JSON object.")
    return document


def _optional_string(obj: Mapping[str, Any], name: str, where: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{where}{name} must be a string.")
    return value


def _required_string(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = _optional_string(obj, name, where)
    if value is None:
        raise ValidationError(f"{where}{name} is required.")
    return value


def _parse_request_metadata(
    document: Mapping[str, Any], *, principal_required: bool, key_arn_required: bool
) -> RequestMetadata:
    raw = document.get(_REQUEST_METADATA)
    if not isinstance(raw, dict) or not raw:
        raise ValidationError("requestMetadata is required and must be a non-empty object.")
    get = raw.get
    kms_request_id, kms_operation = get("kmsRequestId"), get("kmsOperation")
    principal, key_arn = get("awsPrincipalArn"), get("kmsKeyArn")
    via, vpc, vpce = get("kmsViaService"), get("awsSourceVpc"), get("awsSourceVpce")
    # One test for the usual case; the first failing field, in order, for the error.
    if not (isinstance(kms_request_id, str) and isinstance(kms_operation, str)
            and (isinstance(principal, str) or (principal is None and not principal_required))
            and (isinstance(key_arn, str) or (key_arn is None and not key_arn_required))
            and (via is None or isinstance(via, str)) and (vpc is None or isinstance(vpc, str))
            and (vpce is None or isinstance(vpce, str))):
        _metadata_error(raw, principal_required, key_arn_required)
    return RequestMetadata(kms_request_id, kms_operation, principal, key_arn, via, vpc, vpce,
                           MappingProxyType(raw))  # the parsed document's own: not shared


def _metadata_error(raw: Mapping[str, Any], principal_required: bool,
                    key_arn_required: bool) -> NoReturn:
    where = "requestMetadata."
    _required_string(raw, "kmsRequestId", where)
    _required_string(raw, "kmsOperation", where)
    for name, required in (("awsPrincipalArn", principal_required),
                           ("kmsKeyArn", key_arn_required)):
        (_required_string if required else _optional_string)(raw, name, where)
    for name in ("kmsViaService", "awsSourceVpc", "awsSourceVpce"):
        _optional_string(raw, name, where)
    raise InternalError("requestMetadata failed a check that names no field")


def _max_base64_length(max_bytes: int) -> int:
    return 4 * ((max_bytes + 2) // 3)


def _decode_base64(
    document: Mapping[str, Any], name: str, *, required: bool, max_bytes: int
) -> bytes | None:
    """Decode one canonical standard padded Base64 field. Over ``max_bytes``: 501."""
    value = document.get(name)
    if value is None:
        if required:
            raise ValidationError(f"{name} is required.")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a Base64 string.")
    if len(value) > _max_base64_length(max_bytes):
        raise _too_big(name, max_bytes)
    try:
        encoded = value.encode("ascii")
        decoded = binascii.a2b_base64(encoded, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValidationError(f"{name} must be standard Base64 with padding.") from None
    if binascii.b2a_base64(decoded, newline=False) != encoded:
        # Strict decoding still takes two spellings of one value: non-zero trailing bits
        # ("QR==" for b"A") and padding after a whole quantum ("QUJD="). Only the
        # canonical one, the encoding of what it decodes to, is accepted.
        raise ValidationError(f"{name} must be canonical standard Base64 with padding.")
    if len(decoded) > max_bytes:
        raise _too_big(name, max_bytes)
    return decoded


def _too_big(name: str, max_bytes: int) -> UnsupportedOperationError:
    return UnsupportedOperationError(f"{name} exceeds the supported maximum of {max_bytes} bytes.")


def _parse_encryption_algorithm(document: Mapping[str, Any]) -> str:
    algorithm = _required_string(document, "encryptionAlgorithm", "")
    if algorithm != AES_GCM:
        raise ValidationError("encryptionAlgorithm must be AES_GCM.")
    return algorithm


def parse_health_request(body: bytes) -> HealthRequest:
    """Parse a GetHealthStatus body: ``requestMetadata`` with kmsRequestId, kmsOperation."""
    document = _load_object(body)
    metadata = _parse_request_metadata(document, principal_required=False, key_arn_required=False)
    return HealthRequest(request_metadata=metadata)


def parse_metadata_request(body: bytes) -> MetadataRequest:
    """Parse a GetKeyMetadata body (``awsPrincipalArn`` required, ``kmsKeyArn`` optional)."""
    document = _load_object(body)
    metadata = _parse_request_metadata(document, principal_required=True, key_arn_required=False)
    return MetadataRequest(request_metadata=metadata)


def parse_encrypt_request(body: bytes) -> EncryptRequest:
    """Parse and validate an Encrypt body; Base64 fields are returned decoded."""
    document = _load_object(body)
    metadata = _parse_request_metadata(document, principal_required=True, key_arn_required=True)
    plaintext = _decode_base64(document, "plaintext", required=True, max_bytes=MAX_PLAINTEXT_BYTES)
    assert plaintext is not None
    aad = _decode_base64(
        document, "additionalAuthenticatedData", required=False, max_bytes=MAX_AAD_BYTES
    )
    algorithm = _parse_encryption_algorithm(document)
    cdiv_algorithm = _optional_string(document, "ciphertextDataIntegrityValueAlgorithm", "")
    if cdiv_algorithm is not None and cdiv_algorithm != SHA_256:
        raise ValidationError("ciphertextDataIntegrityValueAlgorithm must be SHA_256.")
    return EncryptRequest(
        request_metadata=metadata,
        plaintext=plaintext,
        additional_authenticated_data=aad,
        encryption_algorithm=algorithm,
        ciphertext_data_integrity_value_algorithm=cdiv_algorithm,
    )


def parse_decrypt_request(body: bytes) -> DecryptRequest:
    """Parse and validate a Decrypt body; Base64 fields are returned decoded.

    Structure errors are ValidationError; a well-formed field with an impossible decoded
    size (IV, tag, ciphertextMetadata) is InvalidCiphertextError (see module docstring).
    """
    document = _load_object(body)
    metadata = _parse_request_metadata(document, principal_required=True, key_arn_required=True)
    ciphertext = _decode_base64(
        document, "ciphertext", required=True, max_bytes=MAX_CIPHERTEXT_BYTES
    )
    # IV, tag and metadata: decode with a generous cap so a wrong size is reported as an
    # invalid ciphertext rather than an unsupported size.
    iv = _decode_base64(document, "initializationVector", required=True, max_bytes=1024)
    tag = _decode_base64(document, "authenticationTag", required=True, max_bytes=1024)
    aad = _decode_base64(
        document, "additionalAuthenticatedData", required=False, max_bytes=MAX_AAD_BYTES
    )
    ciphertext_metadata = _decode_base64(
        document, "ciphertextMetadata", required=False, max_bytes=1024
    )
    algorithm = _parse_encryption_algorithm(document)
    assert ciphertext is not None and iv is not None and tag is not None
    if len(iv) not in IV_LENGTHS:
        raise InvalidCiphertextError("The initialization vector must be 12 or 16 bytes.")
    if len(tag) != TAG_LENGTH:
        raise InvalidCiphertextError("The authentication tag must be 16 bytes.")
    if ciphertext_metadata is not None and len(ciphertext_metadata) > MAX_CIPHERTEXT_METADATA_BYTES:
        raise InvalidCiphertextError("The ciphertext metadata must be at most 20 bytes.")
    return DecryptRequest(
        request_metadata=metadata,
        ciphertext=ciphertext,
        initialization_vector=iv,
        authentication_tag=tag,
        additional_authenticated_data=aad,
        ciphertext_metadata=ciphertext_metadata,
        encryption_algorithm=algorithm,
    )


# ------------------------------------------------------------ ciphertextMetadata scheme


@dataclass(frozen=True, slots=True)
class CiphertextMetadata:
    """Decoded ``ciphertextMetadata``: how the HSM AAD was built, and the key version."""

    scheme_version: int
    key_version: int


def encode_ciphertext_metadata(scheme_version: int, key_version: int) -> bytes:
    """Encode ``ciphertextMetadata`` (5 bytes for scheme 1: ``0x01 || uint32be(version)``).

    Scheme 1 means: the HSM AAD is :func:`hsm_aad` (spec length-prefixed form), and the
    ciphertext was made with ``key_version`` (0 to 2**32-1) of the key. Raises ValueError for
    an unknown scheme or an out-of-range version (a programming error, not a client one).
    """
    if scheme_version != CIPHERTEXT_METADATA_SCHEME_V1:
        raise ValueError(f"unknown ciphertextMetadata scheme {scheme_version}")
    if isinstance(key_version, bool) or not 0 <= key_version <= _MAX_KEY_VERSION:
        raise ValueError("key_version must be an integer in [0, 2**32-1]")
    return _METADATA_V1.pack(scheme_version, key_version)


@functools.lru_cache(maxsize=1024)
def ciphertext_metadata_v1(key_version: int) -> bytes:
    """``encode_ciphertext_metadata(1, key_version)``, cached (a key has a few versions)."""
    return encode_ciphertext_metadata(CIPHERTEXT_METADATA_SCHEME_V1, key_version)


def decode_ciphertext_metadata(data: bytes | None) -> CiphertextMetadata:
    """Decode ``ciphertextMetadata`` strictly; anything unknown is InvalidCiphertextError.

    ``None`` (field absent) is an error too: every ciphertext we make carries metadata.
    The metadata is authenticated only once the HSM decrypt succeeds; until then treat the
    key version as a hint for which HSM object to try, nothing more.
    """
    if data is None:
        raise InvalidCiphertextError("The ciphertext metadata is missing.")
    if len(data) != _METADATA_V1.size or data[0] != CIPHERTEXT_METADATA_SCHEME_V1:
        raise InvalidCiphertextError("The ciphertext metadata is not recognised.")
    scheme_version, key_version = _METADATA_V1.unpack(data)
    return CiphertextMetadata(scheme_version=scheme_version, key_version=key_version)


def hsm_aad(aad: bytes | None, metadata: bytes | None) -> bytes:
    """The spec's HSM AAD: ``uint16be(len(aad)) || aad || uint8(len(md)) || md``.

    Absent fields have length 0 (``None`` and ``b""`` give the same bytes, as the spec
    says). The lengths stop AAD bytes from being moved into the metadata or back. The key
    service appends its own binding (key id and version) to this; see the module docstring.
    """
    aad_bytes = b"" if aad is None else bytes(aad)
    md_bytes = b"" if metadata is None else bytes(metadata)
    if len(aad_bytes) > 0xFFFF:
        raise UnsupportedOperationError("additionalAuthenticatedData is too long.")
    if len(md_bytes) > MAX_CIPHERTEXT_METADATA_BYTES:
        raise InvalidCiphertextError("The ciphertext metadata must be at most 20 bytes.")
    return b"".join(
        (len(aad_bytes).to_bytes(2, "big"), aad_bytes, bytes((len(md_bytes),)), md_bytes)
    )


def cdiv(
    aad: bytes | None,
    metadata: bytes | None,
    iv: bytes,
    ciphertext: bytes,
    tag: bytes,
) -> str:
    """Ciphertext data integrity value: Base64(SHA-256(aad || md || iv || ct || tag)).

    Over decoded bytes, absent fields empty, no length prefixes (spec Appendix C). Compute
    it from the encrypt output *before* the verifying decrypt.
    """
    digest = hashlib.sha256()
    for part in (aad, metadata, iv, ciphertext, tag):
        if part:
            digest.update(part)
    return base64.b64encode(digest.digest()).decode("ascii")


# -------------------------------------------------------------------------- responses


def _dumps(document: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(document).encode("ascii")


def encrypt_response(
    ciphertext: bytes,
    initialization_vector: bytes,
    authentication_tag: bytes,
    *,
    ciphertext_metadata: bytes | None = None,
    ciphertext_data_integrity_value: str | None = None,
) -> bytes:
    """Encrypt response body. InternalError if the HSM output breaks the spec's sizes."""
    if len(initialization_vector) not in IV_LENGTHS:
        raise InternalError("The HSM returned an initialization vector of a wrong size.")
    if len(authentication_tag) != TAG_LENGTH:
        raise InternalError("The HSM returned an authentication tag of a wrong size.")
    if ciphertext_metadata is not None and len(ciphertext_metadata) > MAX_CIPHERTEXT_METADATA_BYTES:
        raise InternalError("The ciphertext metadata is too long.")
    # Rendered directly (the bytes _dumps would give: tested): Base64 needs no JSON escaping;
    # the CDIV, a str, goes through the encoder.
    parts = [b'{"ciphertext":"', base64.b64encode(ciphertext),
             b'","initializationVector":"', base64.b64encode(initialization_vector),
             b'","authenticationTag":"', base64.b64encode(authentication_tag), b'"']
    if ciphertext_metadata is not None:
        parts += [b',"ciphertextMetadata":"', base64.b64encode(ciphertext_metadata), b'"']
    if ciphertext_data_integrity_value is not None:
        parts += [b',"ciphertextDataIntegrityValue":',
                  _ENCODER.encode(ciphertext_data_integrity_value).encode("ascii")]
    parts.append(b"}")
    return b"".join(parts)


def decrypt_response(plaintext: bytes) -> bytes:
    """Decrypt response body ``{"plaintext": b64}``. Never log what this returns."""
    return b'{"plaintext":"' + base64.b64encode(plaintext) + b'"}'  # as _dumps renders it


def metadata_response(key_usage: Sequence[str], key_status: str, key_spec: str = AES_256) -> bytes:
    """GetKeyMetadata response body. ``key_status`` is ENABLED or DISABLED (spec)."""
    if key_status not in KEY_STATUSES:
        raise InternalError("keyStatus must be ENABLED or DISABLED.")
    usage = list(key_usage)
    if len(usage) > MAX_KEY_USAGE_VALUES or not all(isinstance(u, str) for u in usage):
        raise InternalError("keyUsage must be at most ten strings.")
    return _dumps({"keySpec": key_spec, "keyUsage": usage, "keyStatus": key_status})


@dataclass(frozen=True, slots=True)
class EkmFleetDetail:
    """One HSM in the GetHealthStatus ``ekmFleetDetails`` list."""

    id: str
    model: str
    health_status: str


def health_response(
    *,
    xks_proxy_fleet_size: int,
    xks_proxy_vendor: str,
    xks_proxy_model: str,
    ekm_vendor: str,
    ekm_fleet_details: Sequence[EkmFleetDetail],
) -> bytes:
    """GetHealthStatus response body (fleet size > 0, 1-10 fleet entries)."""
    if isinstance(xks_proxy_fleet_size, bool) or xks_proxy_fleet_size < 1:
        raise InternalError("xksProxyFleetSize must be a positive integer.")
    if not 1 <= len(ekm_fleet_details) <= MAX_EKM_FLEET_DETAILS:
        raise InternalError("ekmFleetDetails must have one to ten entries.")
    for detail in ekm_fleet_details:
        if detail.health_status not in EKM_HEALTH_STATUSES:
            raise InternalError("healthStatus must be ACTIVE, DEGRADED or UNAVAILABLE.")
    return _dumps(
        {
            "xksProxyFleetSize": xks_proxy_fleet_size,
            "xksProxyVendor": xks_proxy_vendor,
            "xksProxyModel": xks_proxy_model,
            "ekmVendor": ekm_vendor,
            "ekmFleetDetails": [
                {"id": d.id, "model": d.model, "healthStatus": d.health_status}
                for d in ekm_fleet_details
            ],
        }
    )


def _sanitize_message(message: str) -> str:
    cleaned = _NOT_PRINTABLE_ASCII_RE.sub("?", message)
    return cleaned[:MAX_ERROR_MESSAGE_LENGTH]


def error_body(error_name: str, message: str) -> bytes:
    """``{"errorName", "errorMessage"}``; the message is forced to < 512 printable ASCII.

    Non-printable or non-ASCII characters become ``?`` and the message is cut at 511
    characters: an error path must not fail. An ``error_name`` that does not look like
    ``...Exception`` becomes ``InternalException``.
    """
    name = error_name if _ERROR_NAME_RE.fullmatch(error_name) else "InternalException"
    return _dumps({"errorName": name, "errorMessage": _sanitize_message(message)})


def error_body_for(error: BaseException) -> tuple[int, bytes]:
    """HTTP status and body for any exception; non-KmsErrors become a bare 500."""
    if isinstance(error, KmsError):
        return error.http_status, error_body(error.error_name, error.message)
    internal = InternalError()
    return internal.http_status, error_body(internal.error_name, internal.message)
