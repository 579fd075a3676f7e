"""Structured logs: one JSON object per line, with a request id and a redaction processor.

``configure_logging`` routes structlog *and* the standard library (uvicorn, SQLAlchemy...)
through one handler and one processor chain, so every line on the stream is JSON and every
line has been through :func:`redact`. It is called once per worker process by the server
factory; tests call it with their own stream.

Redaction is by name and by type, never by hoping callers are careful:

* any key whose name contains secret, token, pin, password, passwd, plaintext, aad,
  authorization, cookie, credential_secret, private_key or key_material (any case, any
  nesting) has its value replaced by ``"[REDACTED]"``;
* any ``bytes``/``bytearray``/``memoryview`` value becomes ``"[REDACTED bytes]"``: key
  material, ciphertexts and AAD are bytes, and no log line needs them;
* any string that contains an admin token (``kmsat_...``), a ``Bearer`` credential or a
  URL query parameter named like a secret (``?pin=...``) has that part masked, wherever it
  appears (an exception message, a URL logged by an HTTP client...).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from typing import IO, Any

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"
REDACTED_BYTES = "[REDACTED bytes]"
SENSITIVE_KEY_RE = re.compile(
    r"secret|token|(?<![a-z])pin(?![a-z])|_pin|pin_|password|passwd|plaintext|aad"
    r"|authorization|cookie|private_?key|key_?material",
    re.IGNORECASE,
)
# Values that are secrets whatever key they sit under.
SENSITIVE_VALUE_RE = re.compile(
    r"kmsat_[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+\S+|(?i:x-amz-security-token)\S*")
# ``name=value`` in a URL query or form whose name looks secret (a client's URL, logged).
SENSITIVE_PARAM_RE = re.compile(
    r"(?i)([?&;][^=&\s\"']*(?:secret|token|pin|password|passwd|signature|credential|aad"
    r"|plaintext)[^=&\s\"']*=)[^&\s\"']*")
MAX_DEPTH = 6


def scrub(text: str) -> str:
    """Mask token-shaped values and secret-named query parameters inside a string."""
    return SENSITIVE_PARAM_RE.sub(r"\1" + REDACTED, SENSITIVE_VALUE_RE.sub(REDACTED, text))


def is_sensitive_key(key: str) -> bool:
    return SENSITIVE_KEY_RE.search(key) is not None


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return REDACTED_BYTES
    if isinstance(value, str):
        return scrub(value)
    if depth >= MAX_DEPTH:
        return REDACTED if isinstance(value, Mapping | list | tuple | set) else value
    if isinstance(value, Mapping):
        return {str(k): (REDACTED if is_sensitive_key(str(k)) else _clean(v, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else (a Secret wrapper, an HSM handle, an exception...) is rendered by its
    # str and scrubbed; wrappers of secrets redact themselves in str/repr.
    return scrub(str(value))


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask sensitive keys, bytes and token-shaped strings."""
    cleaned: MutableMapping[str, Any] = {}
    for key, value in event_dict.items():
        if key == "event":
            cleaned[key] = _clean(value, 0)
        elif is_sensitive_key(key):
            cleaned[key] = REDACTED
        else:
            cleaned[key] = _clean(value, 0)
    return dict(cleaned)


def _drop_stdlib_noise(_logger: WrappedLogger, _method: str,
                       event_dict: EventDict) -> EventDict:
    # ProcessorFormatter adds the LogRecord itself; it must not reach the renderer.
    event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    return event_dict


#: The id of the HTTP request the current task serves (set by kms/request_log.py and the
#: XKS front door): every log line written while it is set carries it as ``request_id``.
#: A plain ContextVar set and reset once per request (structlog's bind/unbind of a context
#: variable cost about 3 % of an XKS request's instructions).
REQUEST_ID: ContextVar[str | None] = ContextVar("kms_request_id", default=None)


def add_request_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]


def configure_logging(stream: IO[str] | None = None, level: str | int | None = None) -> None:
    """Send every log line of this process, as redacted JSON, to ``stream`` (stderr), at
    ``level`` (default: ``$KMS_LOG_LEVEL``, else INFO)."""
    level = level or os.environ.get("KMS_LOG_LEVEL") or "INFO"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors(),
        processors=[_drop_stdlib_noise, redact,
                    structlog.processors.JSONRenderer(sort_keys=True)],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        # The middleware logs each request once (http_request); uvicorn's access line
        # would repeat it with the raw path and query string.
        lg.propagate = name != "uvicorn.access"
    structlog.configure(
        processors=[*shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "kms") -> Any:
    """A structlog logger; its lines go through :func:`redact` (see configure_logging)."""
    return structlog.get_logger(name)
