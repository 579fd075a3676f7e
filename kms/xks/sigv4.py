"""AWS Signature Version 4 verification for XKS proxy requests (service ``kms-xks-proxy``).

Pure: no I/O, no clock, no global configuration. The caller passes the request pieces, the
current time (``now``) and a credential ``lookup``; the result is a :class:`VerifiedCaller`
or an :class:`AuthenticationFailedError` (HTTP 401 ``AuthenticationFailedException``).

Spec details this module relies on (XKS Proxy API spec v1.0.3, "Authentication" and
"Appendix A: SigV4 Signatures on XKS Proxy Requests"):

* The header is ``AWS4-HMAC-SHA256 Credential=<akid>/<yyyymmdd>/<region>/kms-xks-proxy/
  aws4_request, SignedHeaders=host;x-amz-date, Signature=<hex>`` on one line; "only a space
  separates AWS4-HMAC-SHA256 and Credential (there is no comma)".
* The canonical headers are the ones named in the request's own ``SignedHeaders``; AWS KMS
  signs ``host;x-amz-date`` (the Host value carries ``:port`` when one is used); curl's
  ``--aws-sigv4`` adds ``content-type`` (and botocore signs every header it sends except a
  few), so any listed header is supported, but ``host`` and ``x-amz-date`` are required.
* CanonicalURI is the full path starting with ``/<path-prefix>/kms/xks/v1``;
  CanonicalQueryString is always empty ("the APIs ... do not use query parameters"), so a
  request with a query string is rejected here rather than canonicalised.
* The payload hash is the hex SHA-256 of the body. It is always computed from the body we
  received; a signed ``x-amz-content-sha256`` must equal it.
* The scope's service must be ``kms-xks-proxy``, its date the date of ``X-Amz-Date``; the
  region is the caller's (KMS's) region: any, or one of a configured list.
* Requests "more than 5 minutes in the past (or future...)" fail. A replay inside the window
  verifies: the spec requires no nonce tracking (the body carries ``kmsRequestId``).

Every failure raises the same generic client message; the precise reason is kept on
:attr:`SignatureRejected.reason` for server-side logs only. Neither carries a secret, a
signature or a header value.

The signing key (HMAC chain over date, region, service) is cached, as a keyed HMAC object,
per ``(SHA-256(secret), date, region, service)`` in a small thread-safe LRU
(:class:`SigningKeyCache`), so the hot path is three SHA-256 and one HMAC over short inputs
(about 30 us per request in CPython). The cache never decides *whether* a key is valid:
``lookup`` runs on every request, so removing a credential takes effect at once.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from hsm.frozen import quick_init
from kms.errors import AuthenticationFailedError

__all__ = [
    "ALGORITHM",
    "MAX_AUTHORIZATION_LENGTH",
    "MAX_CLOCK_SKEW",
    "MAX_SIGNED_HEADERS",
    "SERVICE",
    "SignatureRejected",
    "SigningKeyCache",
    "VerifiedCaller",
    "derive_signing_key",
    "verify_sigv4",
]

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "kms-xks-proxy"
MAX_AUTHORIZATION_LENGTH = 2048
MAX_SIGNED_HEADERS = 20
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_PATH_LENGTH = 1024
MAX_METHOD_LENGTH = 16  # bounds what _method_allowed caches
MAX_HEADER_VALUE_LENGTH = 4096

_GENERIC_MESSAGE = "The request signature could not be verified."

# One line, fixed order, as sent by AWS KMS, botocore and curl. Optional single space after
# each comma (AWS's own examples show ", "). Lengths are bounded by the 2 KiB header cap.
_AUTHORIZATION_RE = re.compile(
    r"AWS4-HMAC-SHA256 "
    r"Credential=([A-Za-z0-9]{1,128})/([0-9]{8})/([a-z0-9-]{1,64})/([a-z0-9-]{1,64})/aws4_request,"
    r" ?SignedHeaders=([a-z0-9;-]{1,1024}),"
    r" ?Signature=([0-9a-f]{64})",
    re.ASCII,
)
_HEADER_NAME_RE = re.compile(r"[a-z0-9-]{1,64}", re.ASCII)
_AMZ_DATE_RE = re.compile(
    r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z", re.ASCII
)
# XKS paths use A-Za-z0-9 / _ - . only; every such character is unreserved in RFC 3986, so
# the SigV4 URI-encoding of the path is the identity. Anything else (%, dot segments, empty
# segments) is refused instead of being normalised in a way a signer might not have.
_PATH_RE = re.compile(r"(?:/[A-Za-z0-9._~-]+)+/?|/", re.ASCII)
_DOT_SEGMENT_RE = re.compile(r"/\.\.?(?:/|$)", re.ASCII)
_REQUIRED_SIGNED_HEADERS = frozenset({"host", "x-amz-date"})
_FORBIDDEN_SIGNED_HEADERS = frozenset({"authorization"})


class SignatureRejected(AuthenticationFailedError):
    """An :class:`AuthenticationFailedError` that also says why, for server logs only.

    ``message`` (what the client sees) is always the same generic text; ``reason`` is a short
    fixed phrase that never contains a secret, a signature or request data.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(_GENERIC_MESSAGE)
        self.reason = reason


@quick_init
@dataclass(frozen=True, slots=True)
class VerifiedCaller:
    """Who signed a request that verified: the access key id and the scope it signed for."""

    access_key_id: str
    region: str
    date: date


class SigningKeyCache:
    """A bounded, thread-safe LRU of derived SigV4 signing keys.

    Keyed by ``(SHA-256(secret), yyyymmdd, region, service)`` so the secret itself is not a
    dictionary key. A derived key is only useful for one day, region and service.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be positive")
        self._maxsize = maxsize
        self._entries: OrderedDict[tuple[bytes, str, str, str], hmac.HMAC] = OrderedDict()
        self._lock = threading.Lock()

    def signer(self, secret: bytes, day: str, region: str, service: str) -> hmac.HMAC:
        """A fresh HMAC-SHA256 keyed with ``kSigning`` for ``secret`` and the scope.

        The cache holds one keyed HMAC per scope and hands out ``copy()``s: copying a keyed
        HMAC skips the key set-up, which is most of the cost of a short HMAC.
        """
        cache_key = (hashlib.sha256(secret).digest(), day, region, service)
        with self._lock:
            cached = self._entries.get(cache_key)
            if cached is not None:
                self._entries.move_to_end(cache_key)
                return cached.copy()
        keyed = hmac.new(derive_signing_key(secret, day, region, service), None, hashlib.sha256)
        with self._lock:
            self._entries[cache_key] = keyed
            self._entries.move_to_end(cache_key)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)
        return keyed.copy()

    def clear(self) -> None:
        """Forget every cached signing key."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def derive_signing_key(secret: bytes, day: str, region: str, service: str) -> bytes:
    """The SigV4 key derivation: HMAC chain over date, region, service, ``aws4_request``."""
    k_date = hmac.digest(b"AWS4" + secret, day.encode("ascii"), "sha256")
    k_region = hmac.digest(k_date, region.encode("ascii"), "sha256")
    k_service = hmac.digest(k_region, service.encode("ascii"), "sha256")
    return hmac.digest(k_service, b"aws4_request", "sha256")


_DEFAULT_CACHE = SigningKeyCache()


def _reject(reason: str) -> SignatureRejected:
    return SignatureRejected(reason)


def _collect_headers(
    headers: Mapping[str, str], raw_headers: Iterable[tuple[str, str]] | None
) -> tuple[dict[str, str], frozenset[str]]:
    """Lower-case header dict plus the set of names that occurred more than once."""
    lowered: dict[str, str] = {}
    duplicates: set[str] = set()
    source: Iterable[tuple[str, str]] = raw_headers if raw_headers is not None else headers.items()
    for name, value in source:
        key = name.lower()
        if key in lowered:
            duplicates.add(key)
        lowered[key] = value
    return lowered, frozenset(duplicates)


def _canonical_value(value: str) -> str:
    # SigV4 "Trimall": strip, and collapse runs of whitespace to one space.
    return " ".join(value.split())


@functools.lru_cache(maxsize=512)
def _parse_amz_date(value: str) -> datetime:
    # Cached: at high request rates most requests in one second share their X-Amz-Date.
    # Only successful parses are cached (failures raise), and the values are not secret.
    match = _AMZ_DATE_RE.fullmatch(value)
    if match is None:
        raise _reject("malformed x-amz-date")
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise _reject("malformed x-amz-date") from None


@functools.lru_cache(maxsize=256)
def _signed_header_names(signed_list: str) -> tuple[str, ...]:
    """The names of a ``SignedHeaders`` list, checked. Cached: a client signs the same
    list on every request (only lists that pass are cached; a failure raises)."""
    signed_headers = signed_list.split(";")
    if len(signed_headers) > MAX_SIGNED_HEADERS:
        raise _reject("too many signed headers")
    previous = ""
    for name in signed_headers:
        # Names must be valid and strictly ascending (sorted, no duplicates), as SigV4 says.
        if _HEADER_NAME_RE.fullmatch(name) is None or name <= previous:
            raise _reject("malformed signed headers")
        previous = name
    if not _REQUIRED_SIGNED_HEADERS.issubset(signed_headers):
        raise _reject("host and x-amz-date must be signed")
    if not _FORBIDDEN_SIGNED_HEADERS.isdisjoint(signed_headers):
        raise _reject("malformed signed headers")
    return tuple(signed_headers)


@functools.lru_cache(maxsize=256)
def _path_allowed(raw_path: str) -> bool:
    """Whether SigV4's URI encoding of ``raw_path`` (at most MAX_PATH_LENGTH long: the
    caller checks, so the cache holds short strings only) is the path itself. Cached: a
    client uses a few paths (XKS: one per key and operation)."""
    return _PATH_RE.fullmatch(raw_path) is not None and _DOT_SEGMENT_RE.search(raw_path) is None


@functools.lru_cache(maxsize=64)
def _method_allowed(method: str) -> bool:
    """An upper-case ASCII token (cached as paths are; the caller bounds the length)."""
    return method == method.upper() and method.isascii() and method.isalpha()


def verify_sigv4(
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    lookup: Callable[[str], bytes | None],
    now: datetime,
    service: str = SERVICE,
    allowed_regions: Collection[str] | None = None,
    raw_headers: Iterable[tuple[str, str]] | None = None,
    key_cache: SigningKeyCache | None = None,
) -> VerifiedCaller:
    """Verify the SigV4 ``Authorization`` header of one request and return who signed it.

    ``raw_path`` is the path exactly as received (before percent-decoding), ``query`` the raw
    query string (must be empty), ``headers`` a mapping of the request's headers (names in any
    case). If ``raw_headers`` (the raw ``(name, value)`` list) is given it is used instead,
    and a signed header or ``Authorization`` that occurs more than once is rejected.
    ``lookup(access_key_id)`` returns the secret access key as bytes, or ``None`` if unknown.
    ``now`` must be timezone-aware. ``allowed_regions=None`` accepts any region.

    Raises :class:`AuthenticationFailedError` (a :class:`SignatureRejected`) on any failure.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")

    lowered, duplicates = _collect_headers(headers, raw_headers)

    authorization = lowered.get("authorization")
    if authorization is None:
        raise _reject("missing authorization header")
    if "authorization" in duplicates:
        raise _reject("duplicate authorization header")
    if len(authorization) > MAX_AUTHORIZATION_LENGTH:
        raise _reject("authorization header too long")
    match = _AUTHORIZATION_RE.fullmatch(authorization)
    if match is None:
        raise _reject("malformed authorization header")
    access_key_id, scope_day, region, scope_service, signed_list, signature = match.groups()

    if scope_service != service:
        raise _reject("wrong service in credential scope")
    if allowed_regions is not None and region not in allowed_regions:
        raise _reject("region not allowed")

    signed_headers = _signed_header_names(signed_list)

    canonical_lines: list[str] = []
    amz_date = ""
    for name in signed_headers:
        value = lowered.get(name)
        if value is None:
            raise _reject("signed header missing")
        if name in duplicates:
            raise _reject("duplicate signed header")
        if len(value) > MAX_HEADER_VALUE_LENGTH:
            raise _reject("signed header too long")
        value = _canonical_value(value)
        if name == "x-amz-date":
            amz_date = value
        canonical_lines.append(f"{name}:{value}\n")

    signed_at = _parse_amz_date(amz_date)  # x-amz-date is always signed: checked above
    if amz_date[:8] != scope_day:
        raise _reject("credential scope date does not match x-amz-date")
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        raise _reject("x-amz-date outside the allowed clock skew")

    if query:
        raise _reject("query strings are not supported")
    if len(raw_path) > MAX_PATH_LENGTH or not _path_allowed(raw_path):
        raise _reject("unsupported request path")
    if len(method) > MAX_METHOD_LENGTH or not _method_allowed(method):
        raise _reject("unsupported method")

    payload_hash = hashlib.sha256(body).hexdigest()
    if (
        "x-amz-content-sha256" in signed_headers
        and _canonical_value(lowered["x-amz-content-sha256"]) != payload_hash
    ):
        raise _reject("x-amz-content-sha256 does not match the body")

    secret = lookup(access_key_id)
    if secret is None:
        raise _reject("unknown access key id")

    canonical_request = (
        f"{method}\n{raw_path}\n\n{''.join(canonical_lines)}\n{signed_list}\n{payload_hash}"
    )
    try:
        canonical_bytes = canonical_request.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot have come off the wire; nothing a signer could have signed.
        raise _reject("unencodable signed header value") from None
    scope = f"{scope_day}/{region}/{scope_service}/aws4_request"
    string_to_sign = (
        f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical_bytes).hexdigest()}"
    )
    cache = key_cache if key_cache is not None else _DEFAULT_CACHE
    signer = cache.signer(secret, scope_day, region, scope_service)
    signer.update(string_to_sign.encode("ascii"))
    expected = signer.hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise _reject("signature mismatch")

    return VerifiedCaller(access_key_id=access_key_id, region=region, date=signed_at.date())
