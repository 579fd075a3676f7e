"""Per-request logging and metrics for the whole app (XKS, admin and operations routes).

:class:`RequestObservability` is a pure ASGI middleware (it does not buffer bodies). For
each HTTP request it

* takes the caller's ``X-Request-Id`` if it is a short token of ``A-Za-z0-9._-``, or makes
  one, binds it to every log line of the request (``kms.logging.REQUEST_ID``) and returns it;
* logs one ``http_request`` line: method, route template (never the raw path or query,
  which may carry values a client chose), status, duration, and the admin token's name;
* counts the request in ``kms_http_requests_total`` and, for admin routes, in
  ``kms_requests_total`` / ``kms_request_duration_seconds`` with the errorName as outcome
  (XKS routes report there themselves, through ``kms.metrics.observe_xks``).

Nothing here imports FastAPI: the XKS front door (kms/xks/routes.py) uses it too, and
``kms serve`` serves XKS before it has imported FastAPI (kms/serving.py).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kms import metrics
from kms.logging import REQUEST_ID, get_logger

ERROR_STATE = "kms_error_name"  # request.state: set by the admin routes (metrics outcome)
ACTOR_STATE = "kms_actor"  # request.state: the admin token's name (the log line)
REQUEST_ID_HEADER = "x-request-id"
ACCESS_LOG_ALL = os.environ.get("KMS_ACCESS_LOG", "") == "all"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
ADMIN_PREFIX = "/admin/"

log = get_logger("kms.http")


# Request ids: a random per-process prefix and a counter (unique, unguessable across
# processes, and no system call per request as uuid4() makes).
_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if REQUEST_ID_RE.fullmatch(text):
                return text
            break
    return f"{_ID_PREFIX}{next(_ID_COUNTER):020x}"


def route_template(scope: Scope) -> str:
    """The matched route's template; bounded labels even for routes that do not say."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if path:
        return str(path)
    return "(unmatched)"  # (XKS paths never come here: kms/xks/routes.py answers them)


def record_request(scope: Scope, status: int, seconds: float) -> None:
    """Metrics and the ``http_request`` log line of one finished request."""
    route = route_template(scope)
    method = str(scope.get("method", ""))
    state: dict[str, Any] = scope.get("state") or {}
    error_name = state.get(ERROR_STATE)
    metrics.observe_http(route, method, status)
    if route.startswith(ADMIN_PREFIX):
        outcome = str(error_name) if error_name else metrics.outcome_for_status(status)
        metrics.observe_request(f"{method} {route}", outcome, seconds)
    log_request(method, route, status, seconds, error=error_name,
                actor=state.get(ACTOR_STATE))


def xks_log_line(status: int) -> bool:
    """Whether an XKS answer of ``status`` gets an ``http_request`` line: refusals and
    errors (every XKS request is in the audit log), or all with KMS_ACCESS_LOG=all."""
    return status >= 400 or ACCESS_LOG_ALL


def log_request(method: str, route: str, status: int, seconds: float, *,
                audit_wait: float | None = None, error: object = None,
                actor: object = None) -> None:
    """The ``http_request`` log line. The XKS front door (kms/xks/routes.py, which bypasses
    the middleware and counts its own metrics: kms.metrics.observe_xks) logs through this
    too, with ``audit_wait``: the part of ``seconds`` that the answer waited for its durable
    audit record (``audit_wait_ms``), so a slow answer says whether it was slow in the
    service or in the audit log's commit (the disk). It logs no refusal beyond its source's
    auth-failure budget: a flood is counted (metrics, the audit log's
    ``suppressed_since_last``), not logged line by line."""
    fields: dict[str, Any] = {"method": method, "route": route, "status": status,
                              "duration_ms": round(seconds * 1000, 3)}
    if audit_wait is not None:
        fields["audit_wait_ms"] = round(audit_wait * 1000, 3)
    if error:
        fields["error"] = error
    if actor:
        fields["actor"] = actor
    level = "warning" if status >= 500 else "info"
    getattr(log, level)("http_request", **fields)


class RequestObservability:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        started = time.perf_counter()
        status = 500
        bound = REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            record_request(scope, status, seconds)
            REQUEST_ID.reset(bound)
