"""Audit record, schema version 1: fields, canonical encoding and the hash chain (pure).

Encoding (docs/audit.md, "Records"): RFC 8785 (JCS) canonical JSON via ``rfc8785``. Every
schema field is always present; a field without a value is ``null`` (never omitted), both
at top level and inside ``request``, so every record has the same key set and a verifier
can reject unknown or missing keys. ``detail`` is a free-form object of non-secret extras
and holds only the keys given. There are no floats anywhere (integers are bounded to
|n| < 2**53 so they are exact in every JSON implementation).

The chain: ``prev`` is the hex SHA-256 of the canonical bytes of the previous record, and
64 zeros for ``seq`` 0. The Merkle leaf of a record is ``merkle.leaf_hash(canonical)``.

Nothing here reads a clock: the time is passed in.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import rfc8785

from hsm.frozen import quick_init
from kms.audit import merkle
from kms.audit.errors import NonCanonicalRecordError, RecordFormatError

__all__ = [
    "ACTOR_KINDS",
    "GENESIS_PREV",
    "MAX_RECORD_BYTES",
    "OPERATIONS",
    "RECORD_FIELDS",
    "SCHEMA_VERSION",
    "Actor",
    "ActorKind",
    "AuditRecord",
    "ChainHead",
    "Operation",
    "Outcome",
    "RequestMetadata",
    "build_record",
    "decode",
    "encode",
    "encode_fields",
    "format_time",
    "is_real_day",
    "record_hash",
    "record_leaf_hash",
]

SCHEMA_VERSION: Final = 1
GENESIS_PREV: Final = "0" * 64
#: Hard cap on one encoded record; checked before parsing.
MAX_RECORD_BYTES: Final = 16 * 1024
MAX_INT: Final = (1 << 53) - 1
_MAX_STR = 2048
_MAX_DETAIL_KEYS = 32


class Operation(StrEnum):
    """The closed set of audited operations. Add new members here (and only here)."""

    XKS_ENCRYPT = "xks.encrypt"
    XKS_DECRYPT = "xks.decrypt"
    XKS_METADATA = "xks.metadata"
    XKS_HEALTH = "xks.health"
    XKS_AUTH = "xks.auth"
    KEY_CREATE = "key.create"
    KEY_ROTATE = "key.rotate"
    KEY_REVOKE = "key.revoke"
    KEY_ENABLE = "key.enable"
    KEY_SCHEDULE_DELETION = "key.schedule_deletion"
    KEY_CANCEL_DELETION = "key.cancel_deletion"
    KEY_DESTROY = "key.destroy"
    KEY_IMPORT = "key.import"
    KEY_SET_RULES = "key.set_rules"
    KEY_SET_MIN_DECRYPT_VERSION = "key.set_min_decrypt_version"
    STORE_CREATE = "store.create"
    STORE_DISABLE = "store.disable"
    STORE_ENABLE = "store.enable"
    CREDENTIAL_ADD = "credential.add"
    CREDENTIAL_REMOVE = "credential.remove"
    TOKEN_CREATE = "token.create"  # noqa: S105 - an operation name
    TOKEN_REVOKE = "token.revoke"  # noqa: S105
    AUDIT_CHECKPOINT = "audit.checkpoint"
    AUDIT_EXPORT = "audit.export"
    ADMIN_READ = "admin.read"
    ENVELOPE_ENCRYPT = "envelope.encrypt"
    ENVELOPE_DECRYPT = "envelope.decrypt"


OPERATIONS: Final[frozenset[str]] = frozenset(op.value for op in Operation)


class Outcome(StrEnum):
    OK = "ok"
    ERROR = "error"
    DENIED = "denied"


class ActorKind(StrEnum):
    XKS_CREDENTIAL = "xks_credential"
    ADMIN_TOKEN = "admin_token"  # noqa: S105 - an actor kind
    CLI = "cli"
    SYSTEM = "system"


_OUTCOMES: Final = frozenset(o.value for o in Outcome)
_ACTOR_KINDS: Final = frozenset(k.value for k in ActorKind)
ACTOR_KINDS: Final = _ACTOR_KINDS

#: Top-level keys of a schema-1 record, in canonical (sorted) order.
RECORD_FIELDS: Final = (
    "actor",
    "context_hash",
    "detail",
    "error",
    "key_id",
    "key_version",
    "latency_us",
    "op",
    "outcome",
    "prev",
    "request",
    "seq",
    "store",
    "time",
    "v",
)
_RECORD_FIELD_SET: Final = frozenset(RECORD_FIELDS)
#: The XKS ``requestMetadata`` subset we keep (names as in the XKS spec).
REQUEST_FIELDS: Final = (
    "awsPrincipalArn",
    "awsSourceVpce",
    "kmsKeyArn",
    "kmsOperation",
    "kmsRequestId",
    "kmsViaService",
)
_REQUEST_FIELD_SET: Final = frozenset(REQUEST_FIELDS)

_TIME_RE: Final = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_HEX64_RE: Final = re.compile(r"\A[0-9a-f]{64}\Z")
_ERROR_NAME_RE: Final = re.compile(r"\A[A-Za-z][A-Za-z0-9]{0,63}\Z")
_DETAIL_KEY_RE: Final = re.compile(r"\A[a-z][a-z0-9_]{0,63}\Z")


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2025-01-31T12:00:00.000001Z``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("audit time must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fail(message: str) -> RecordFormatError:
    return RecordFormatError(message)


def _check_str(value: object, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_STR:
        raise _fail(f"{name} must be a non-empty string of at most {_MAX_STR} characters")


def _check_int(value: object, name: str, *, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_INT:
        raise _fail(f"{name} must be an integer in [{minimum}, 2**53)")


def _check_time(value: object) -> None:
    if not isinstance(value, str) or not _TIME_RE.match(value):
        raise _fail("time must be RFC 3339 UTC with microseconds (YYYY-MM-DDTHH:MM:SS.ffffffZ)")
    if not _is_real_date(value):
        raise _fail("time is not a valid date")


_CLOCK_RE: Final = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z\Z")


def _is_real_date(value: str) -> bool:
    """For a string that matches _TIME_RE: is it a real moment? Same answer as
    ``datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")`` succeeding (test_record.py
    checks it), without calling strptime (slow) for every record: the day is checked
    once (cached) and the time of day by pattern (hours 00-23, minutes and seconds 00-59)."""
    return is_real_day(value[:10]) and _CLOCK_RE.match(value, 11) is not None


@functools.lru_cache(maxsize=1024)
def is_real_day(day: str) -> bool:
    """Whether ``day`` (YYYY-MM-DD) is a real date (cached: records share their days)."""
    try:
        datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def _check_hex64(value: object, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not _HEX64_RE.match(value):
        raise _fail(f"{name} must be 64 lowercase hex characters")


@quick_init
@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: a kind and an identifier (credential id, token name, CLI user...)."""

    kind: str
    id: str

    def __post_init__(self) -> None:
        if self.kind not in _ACTOR_KINDS:
            raise _fail(f"actor.kind must be one of {sorted(_ACTOR_KINDS)}")
        _check_str(self.id, "actor.id")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": str(self.kind)}

    @classmethod
    def from_json(cls, obj: object) -> Actor:
        if not isinstance(obj, dict) or set(obj) != {"id", "kind"}:
            raise _fail("actor must be an object with exactly kind and id")
        return cls(kind=obj["kind"], id=obj["id"])


@quick_init
@dataclass(frozen=True, slots=True)
class RequestMetadata:
    """The XKS ``requestMetadata`` subset kept in the log (absent values are null)."""

    kmsRequestId: str | None = None  # XKS spelling on purpose
    awsPrincipalArn: str | None = None
    kmsKeyArn: str | None = None
    kmsViaService: str | None = None
    awsSourceVpce: str | None = None
    kmsOperation: str | None = None

    def __post_init__(self) -> None:
        for value in (self.kmsRequestId, self.awsPrincipalArn, self.kmsKeyArn,
                      self.kmsViaService, self.awsSourceVpce, self.kmsOperation):
            if value is not None and (not isinstance(value, str)
                                      or not 0 < len(value) <= _MAX_STR):
                for name in REQUEST_FIELDS:  # the first bad one, by name
                    _check_str(getattr(self, name), f"request.{name}", optional=True)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in REQUEST_FIELDS}

    @classmethod
    def from_json(cls, obj: object) -> RequestMetadata:
        if not isinstance(obj, dict) or set(obj) != _REQUEST_FIELD_SET:
            raise _fail(f"request must be an object with exactly {list(REQUEST_FIELDS)}")
        return cls(**obj)

    @classmethod
    def from_xks(cls, metadata: Mapping[str, Any]) -> RequestMetadata:
        """Keep the audited subset of an XKS ``requestMetadata`` object: its fields in
        REQUEST_FIELDS that are non-empty strings, each cut to the record's limit (2,048
        characters, the spec's longest ARN); everything else is dropped."""
        get = metadata.get
        return cls(_kept(get("kmsRequestId")), _kept(get("awsPrincipalArn")),
                   _kept(get("kmsKeyArn")), _kept(get("kmsViaService")),
                   _kept(get("awsSourceVpce")), _kept(get("kmsOperation")))


def _kept(value: object) -> str | None:
    """An XKS ``requestMetadata`` value as the log keeps it (RequestMetadata.from_xks)."""
    return value[:_MAX_STR] if isinstance(value, str) and value else None


DetailValue = str | int | bool | None


def _freeze_detail(detail: Mapping[str, DetailValue]) -> Mapping[str, DetailValue]:
    if not isinstance(detail, Mapping):
        raise _fail("detail must be an object")
    if len(detail) > _MAX_DETAIL_KEYS:
        raise _fail(f"detail has more than {_MAX_DETAIL_KEYS} keys")
    for key, value in detail.items():
        if not isinstance(key, str) or not _DETAIL_KEY_RE.match(key):
            raise _fail("detail keys must be snake_case identifiers")
        if isinstance(value, str):
            if len(value) > _MAX_STR:
                raise _fail(f"detail.{key} is too long")
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            _check_int(value, f"detail.{key}", minimum=-MAX_INT)
        else:
            raise _fail(f"detail.{key} must be a string, integer, boolean or null")
    return MappingProxyType(dict(detail))


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit record, schema version 1 (field meanings: docs/audit.md)."""

    seq: int
    time: str
    prev: str
    op: str
    outcome: str
    actor: Actor
    key_id: str | None = None
    key_version: int | None = None
    store: str | None = None
    error: str | None = None
    request: RequestMetadata | None = None
    context_hash: str | None = None
    latency_us: int | None = None
    detail: Mapping[str, DetailValue] = field(default_factory=dict)
    v: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.v != SCHEMA_VERSION or isinstance(self.v, bool):
            raise _fail(f"unsupported schema version {self.v!r}")
        _check_int(self.seq, "seq", minimum=0)
        _check_time(self.time)
        _check_hex64(self.prev, "prev")
        if self.seq == 0 and self.prev != GENESIS_PREV:
            raise _fail("record 0 must have prev = 64 zeros")
        if self.op not in OPERATIONS:
            raise _fail(f"unknown op {self.op!r}")
        object.__setattr__(self, "op", str(self.op))  # a StrEnum member becomes a plain str
        if self.outcome not in _OUTCOMES:
            raise _fail(f"outcome must be one of {sorted(_OUTCOMES)}")
        object.__setattr__(self, "outcome", str(self.outcome))
        if self.error is not None and not (
            isinstance(self.error, str) and _ERROR_NAME_RE.match(self.error)
        ):
            raise _fail("error must be an errorName such as ValidationException")
        if self.outcome == Outcome.OK and self.error is not None:
            raise _fail("an ok outcome carries no error")
        if not isinstance(self.actor, Actor):
            raise _fail("actor must be an Actor")
        _check_str(self.key_id, "key_id", optional=True)
        _check_int(self.key_version, "key_version", minimum=1, optional=True)
        _check_str(self.store, "store", optional=True)
        if self.request is not None and not isinstance(self.request, RequestMetadata):
            raise _fail("request must be RequestMetadata or None")
        _check_hex64(self.context_hash, "context_hash", optional=True)
        _check_int(self.latency_us, "latency_us", minimum=0, optional=True)
        object.__setattr__(self, "detail", _freeze_detail(self.detail))

    def to_json(self) -> dict[str, Any]:
        """The JSON object that is canonicalized (every field present, null if absent)."""
        return {
            "actor": self.actor.to_json(),
            "context_hash": self.context_hash,
            "detail": dict(self.detail),
            "error": self.error,
            "key_id": self.key_id,
            "key_version": self.key_version,
            "latency_us": self.latency_us,
            "op": self.op,
            "outcome": self.outcome,
            "prev": self.prev,
            "request": None if self.request is None else self.request.to_json(),
            "seq": self.seq,
            "store": self.store,
            "time": self.time,
            "v": self.v,
        }

    @classmethod
    def from_json(cls, obj: object) -> AuditRecord:
        """Build from a parsed JSON object; exact key set, strict types."""
        if not isinstance(obj, dict):
            raise _fail("record must be a JSON object")
        if set(obj) != _RECORD_FIELD_SET:
            missing = sorted(_RECORD_FIELD_SET - set(obj))
            extra = sorted(set(obj) - _RECORD_FIELD_SET)
            raise _fail(f"record keys differ from schema 1 (missing {missing}, unknown {extra})")
        if obj["v"] != SCHEMA_VERSION or isinstance(obj["v"], bool):
            raise _fail(f"unsupported schema version {obj['v']!r}")
        detail = obj["detail"]
        if not isinstance(detail, dict):
            raise _fail("detail must be an object")
        request = obj["request"]
        return cls(
            v=obj["v"],
            seq=obj["seq"],
            time=obj["time"],
            prev=obj["prev"],
            op=obj["op"],
            key_id=obj["key_id"],
            key_version=obj["key_version"],
            store=obj["store"],
            outcome=obj["outcome"],
            error=obj["error"],
            actor=Actor.from_json(obj["actor"]),
            request=None if request is None else RequestMetadata.from_json(request),
            context_hash=obj["context_hash"],
            latency_us=obj["latency_us"],
            detail=detail,
        )


_FAST_JSON: Final = json.JSONEncoder(ensure_ascii=False, sort_keys=True,
                                     separators=(",", ":"), allow_nan=False)


def encode(record: AuditRecord) -> bytes:
    """RFC 8785 canonical bytes of a record (what is hashed, chained and exported).

    Fast path: for a schema-1 record, ``json`` with sorted keys, no spaces and UTF-8 output
    *is* RFC 8785: every key is ASCII (so code-point order equals UTF-16 order), every number
    is an integer below 2**53, and Python escapes strings exactly as ECMAScript does (the
    short escapes for backspace, form feed, newline, return and tab; other controls as a
    lowercase six-character unicode escape). The one difference, lone surrogates,
    makes the UTF-8 encoding fail and falls back to the ``rfc8785`` package (which rejects
    them). tests/audit/test_record_fast_encoding.py checks the equivalence with Hypothesis.
    """
    obj = record.to_json()
    try:
        data = _FAST_JSON.encode(obj).encode("utf-8")
    except UnicodeEncodeError:
        data = rfc8785.dumps(obj)
    if len(data) > MAX_RECORD_BYTES:
        raise _fail(f"encoded record exceeds {MAX_RECORD_BYTES} bytes")
    return data


_esc: Final = json.encoder.encode_basestring  # the escaper _FAST_JSON uses for strings
_OP_JSON: Final = {op: _esc(op) for op in OPERATIONS}
_OUTCOME_JSON: Final = {o: _esc(o) for o in _OUTCOMES}
_KIND_JSON: Final = {k: _esc(k) for k in _ACTOR_KINDS}
_hex64: Final = _HEX64_RE.match
_error_name: Final = _ERROR_NAME_RE.match


_last_good_time: list[object] = [None]  # the last time string _fast_parts accepted


def _fast_str(value: object) -> str | None:
    """JSON text of an optional bounded string, or None if the fast path does not apply."""
    if value is None:
        return "null"
    if type(value) is str and 0 < len(value) <= _MAX_STR:
        return _esc(value)
    return None


def encode_fields(
    seq: int,
    time: str,
    prev: str,
    op: Operation | str,
    outcome: Outcome | str,
    actor: Actor,
    key_id: str | None = None,
    key_version: int | None = None,
    store: str | None = None,
    error: str | None = None,
    request: RequestMetadata | None = None,
    context_hash: str | None = None,
    latency_us: int | None = None,
    detail: Mapping[str, DetailValue] | None = None,
) -> bytes:
    """Canonical bytes of the record with these fields, without building an AuditRecord.

    The audit log's hot path (one call per appended record). Same result as
    ``encode(AuditRecord(...))`` with the same arguments, errors included: every field is
    checked as in :meth:`AuditRecord.__post_init__` (exact types, ranges, patterns) and the
    text is assembled in canonical key order with the escaper ``json`` uses, i.e. the
    bytes of :func:`encode`. Anything this path does not handle itself (a ``str`` or
    ``int`` subclass, a check that fails, a lone surrogate) goes through
    ``encode(AuditRecord(...))``, which produces the bytes or raises the precise
    :class:`RecordFormatError`. tests/audit/test_record_fast_encoding.py checks the
    equivalence with Hypothesis.
    """
    parts = _fast_parts(seq, time, prev, op, outcome, actor, key_id, key_version, store,
                        error, request, context_hash, latency_us, detail)
    if parts is not None:
        try:
            data = parts.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the slow path rejects it
            data = b""
        if data and len(data) <= MAX_RECORD_BYTES:
            return data
    return encode(AuditRecord(
        seq=seq, time=time, prev=prev, op=op, outcome=outcome, actor=actor, key_id=key_id,
        key_version=key_version, store=store, error=error, request=request,
        context_hash=context_hash, latency_us=latency_us,
        detail={} if detail is None else detail))


def encode_values(seq: int, time: str, prev: str, op: object, outcome: object, kind: object,
                  actor_id: object, key_id: object, key_version: object, store: object,
                  error: object, request: object, context_hash: object, latency_us: object,
                  detail: object) -> bytes | None:
    """Canonical bytes of a record given as plain values, or None.

    The audit writer process's path (kms/audit/writer_process.py): the event arrives as
    plain values (``op``, ``outcome`` and the actor's ``kind`` as strings, ``request`` as a
    tuple in :data:`REQUEST_FIELDS` order or None), and building the ``Actor``,
    ``RequestMetadata`` and ``AuditEvent`` objects only to take them apart again cost more
    than the encoding. Every check of :func:`encode_fields` applies; where it returns
    bytes they are the bytes ``encode_fields`` gives for the same event. None means "not
    handled here": the caller builds the objects and calls ``encode_fields``, which gives
    the bytes or the precise error (tests/audit/test_writer_process.py).
    """
    if request is not None and (type(request) is not tuple or len(request) != 6):
        return None
    text = _fast_text(seq, time, prev, op, outcome, kind, actor_id, key_id, key_version,
                      store, error, request, context_hash, latency_us, detail)
    if text is None:
        return None
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: encode_fields rejects it
        return None
    return data if len(data) <= MAX_RECORD_BYTES else None


def _fast_parts(seq: int, time: str, prev: str, op: object, outcome: object, actor: object,
                key_id: object, key_version: object, store: object, error: object,
                request: object, context_hash: object, latency_us: object,
                detail: object) -> str | None:
    """The record's JSON text if every field passes the exact checks, else None."""
    if type(actor) is not Actor:
        return None
    if request is None:
        req = None
    elif type(request) is RequestMetadata:
        req = (request.awsPrincipalArn, request.awsSourceVpce, request.kmsKeyArn,
               request.kmsOperation, request.kmsRequestId, request.kmsViaService)
    else:
        return None
    return _fast_text(seq, time, prev, op, outcome, actor.kind, actor.id, key_id,
                      key_version, store, error, req, context_hash, latency_us, detail)


def _fast_text(seq: int, time: str, prev: str, op: object, outcome: object, kind: object,
               actor_id: object, key_id: object, key_version: object, store: object,
               error: object, request: tuple[object, ...] | None, context_hash: object,
               latency_us: object, detail: object) -> str | None:
    """The text behind :func:`_fast_parts` and :func:`encode_values` (``request`` in
    REQUEST_FIELDS order)."""
    if type(seq) is not int or not 0 <= seq <= MAX_INT:
        return None
    if type(prev) is not str or not _hex64(prev) or (seq == 0 and prev != GENESIS_PREV):
        return None
    if time is not _last_good_time[0]:  # a batch shares one time string: check it once
        if type(time) is not str or not _TIME_RE.match(time) or not _is_real_date(time):
            return None
        _last_good_time[0] = time
    op_j = _OP_JSON.get(op)  # type: ignore[call-overload]
    outcome_j = _OUTCOME_JSON.get(outcome)  # type: ignore[call-overload]
    if op_j is None or outcome_j is None:
        return None
    if error is None:
        error_j = "null"
    elif type(error) is str and _error_name(error) and outcome != Outcome.OK:
        error_j = _esc(error)
    else:
        return None
    if type(kind) is not str and type(kind) is not ActorKind:
        return None
    kind_j = _KIND_JSON.get(kind)
    id_j = _fast_str(actor_id)
    if kind_j is None or id_j is None or id_j == "null":
        return None
    key_id_j = _fast_str(key_id)
    store_j = _fast_str(store)
    if key_id_j is None or store_j is None:
        return None
    if key_version is None:
        kv_j = "null"
    elif type(key_version) is int and 1 <= key_version <= MAX_INT:
        kv_j = str(key_version)
    else:
        return None
    if latency_us is None:
        lat_j = "null"
    elif type(latency_us) is int and 0 <= latency_us <= MAX_INT:
        lat_j = str(latency_us)
    else:
        return None
    if context_hash is None:
        ch_j = "null"
    elif type(context_hash) is str and _hex64(context_hash):
        ch_j = f'"{context_hash}"'
    else:
        return None
    if request is None:
        req_j = "null"
    else:
        fields = []
        for value in request:
            if value is None:
                fields.append("null")
            elif type(value) is str and 0 < len(value) <= _MAX_STR:
                fields.append(_esc(value))
            else:
                return None
        req_j = (f'{{"awsPrincipalArn":{fields[0]},"awsSourceVpce":{fields[1]},'
                 f'"kmsKeyArn":{fields[2]},"kmsOperation":{fields[3]},'
                 f'"kmsRequestId":{fields[4]},"kmsViaService":{fields[5]}}}')
    if detail is None or (type(detail) is dict and not detail):
        detail_j = "{}"
    elif isinstance(detail, Mapping):
        try:
            detail_j = _FAST_JSON.encode(dict(_freeze_detail(detail)))
        except RecordFormatError:
            return None
    else:
        return None
    return (f'{{"actor":{{"id":{id_j},"kind":{kind_j}}},"context_hash":{ch_j},'
            f'"detail":{detail_j},"error":{error_j},"key_id":{key_id_j},'
            f'"key_version":{kv_j},"latency_us":{lat_j},"op":{op_j},"outcome":{outcome_j},'
            f'"prev":"{prev}","request":{req_j},"seq":{seq},"store":{store_j},'
            f'"time":"{time}","v":1}}')


def _reject_float(text: str) -> Any:
    raise RecordFormatError("records contain no floats")


def _reject_constant(text: str) -> Any:
    raise RecordFormatError(f"invalid JSON constant {text}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise RecordFormatError("duplicate key in JSON object")
    return out


_DECODER: Final = json.JSONDecoder(
    parse_float=_reject_float,
    parse_constant=_reject_constant,
    object_pairs_hook=_unique_keys,
)


def parse_json(data: bytes) -> Any:
    """Strict JSON parse of one record line: length cap, UTF-8, no floats, no dup keys."""
    if len(data) > MAX_RECORD_BYTES:
        raise RecordFormatError(f"record exceeds {MAX_RECORD_BYTES} bytes")
    try:
        text = data.decode("utf-8")
        return _DECODER.decode(text)
    except RecordFormatError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RecordFormatError(f"not valid JSON: {exc}") from None


def decode(data: bytes) -> AuditRecord:
    """Parse canonical bytes into a record; rejects anything that is not exactly canonical."""
    record = AuditRecord.from_json(parse_json(data))
    if encode(record) != data:
        raise NonCanonicalRecordError("record bytes are not the RFC 8785 canonical encoding")
    return record


def record_hash(canonical: bytes) -> str:
    """Hex SHA-256 of a record's canonical bytes (the next record's ``prev``)."""
    return hashlib.sha256(canonical).hexdigest()


def record_leaf_hash(canonical: bytes) -> bytes:
    """Merkle leaf hash of a record: SHA-256(0x00 || canonical bytes)."""
    return merkle.leaf_hash(canonical)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of the log: its seq and the hex SHA-256 of its canonical bytes."""

    seq: int
    record_hash: str

    @classmethod
    def after(cls, canonical: bytes) -> ChainHead:
        """Head after appending the record whose canonical bytes are given."""
        return cls(seq=decode(canonical).seq, record_hash=record_hash(canonical))


def build_record(
    head: ChainHead | None,
    *,
    time: datetime | str,
    op: Operation | str,
    outcome: Outcome | str,
    actor: Actor,
    key_id: str | None = None,
    key_version: int | None = None,
    store: str | None = None,
    error: str | None = None,
    request: RequestMetadata | None = None,
    context_hash: str | None = None,
    latency_us: int | None = None,
    detail: Mapping[str, DetailValue] | None = None,
) -> AuditRecord:
    """Next record after ``head`` (``None`` for the first record): fills ``seq`` and ``prev``."""
    if head is None:
        seq, prev = 0, GENESIS_PREV
    else:
        seq, prev = head.seq + 1, head.record_hash
    return AuditRecord(
        seq=seq,
        time=format_time(time) if isinstance(time, datetime) else time,
        prev=prev,
        op=op,
        outcome=outcome,
        actor=actor,
        key_id=key_id,
        key_version=key_version,
        store=store,
        error=error,
        request=request,
        context_hash=context_hash,
        latency_us=latency_us,
        detail={} if detail is None else detail,
    )
