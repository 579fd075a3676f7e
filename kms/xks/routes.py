"""The XKS HTTP edge: raw Starlette endpoints (no FastAPI body parsing on the hot path).

The request is read with a hard size cap and handed to :class:`XksHandler`: on the event
loop itself when everything it needs is cached (pure CPU work and one HSM call, the bound
the design allows), else on a worker thread (a cache miss reads the database; the deep
health check and a CDIV encrypt make two HSM calls). It is answered only once its audit
record is durable. If the record cannot be written the answer is 503
DependencyTimeoutException and the result is withheld (fail closed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kms.audit.log import AuditLog
from kms.db.engine import WouldBlock, non_blocking
from kms.errors import (
    DependencyTimeoutError,
    InternalError,
    KmsError,
    UnsupportedOperationError,
    ValidationError,
)
from kms.xks import wire
from kms.xks.handler import XksHandler, XksRequest

MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 5.0
JSON = "application/json"

Observer = Callable[[str, int, float], None]


def _json(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type=JSON)


class XksEndpoint:
    def __init__(self, handler: XksHandler, audit: AuditLog, *, workers: int = 8,
                 observe: Observer | None = None, inline: bool = True) -> None:
        self.handler = handler
        self.audit = audit
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xks")
        self.observe = observe
        self.inline = inline

    async def handle_request(self, request: Request) -> Response:
        started = time.perf_counter()
        status, body, name = await self._handle(request)
        if self.observe is not None:
            self.observe(name, status, time.perf_counter() - started)
        return _json(status, body)

    async def _handle(self, request: Request) -> tuple[int, bytes, str]:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return (*wire.error_body_for(UnsupportedOperationError(
                "the request body is larger than supported")), "oversize")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):  # a slow client is cut off
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        return (*wire.error_body_for(UnsupportedOperationError(
                            "the request body is larger than supported")), "oversize")
                    chunks.append(chunk)
        except TimeoutError:
            return (*wire.error_body_for(ValidationError(
                "the request body was not received in time")), "slow-body")
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        req = XksRequest(
            method=request.method,
            raw_path=raw_path.decode("latin-1"),
            query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1"))
                     for k, v in request.scope["headers"]],
            body=b"".join(chunks),
            source=request.client.host if request.client else "")
        try:
            resp = None
            if self.inline:
                # Fast path on the loop: pure CPU work and at most one HSM call. Anything
                # that would read the database (a cache miss) raises WouldBlock before any
                # HSM call, and the request then runs on a worker thread instead.
                try:
                    with non_blocking():
                        resp = self.handler.process(req)
                except WouldBlock:
                    resp = None
            if resp is None:
                loop = asyncio.get_running_loop()
                resp = await loop.run_in_executor(self.pool, self.handler.process, req)
        except KmsError as exc:  # the handler answers its own errors; this is a safety net
            return (*wire.error_body_for(exc), "unknown")
        except Exception:
            return (*wire.error_body_for(InternalError("internal error")), "unknown")
        if resp.event is not None:
            try:
                await self.audit.append_async(resp.event)
            except Exception:
                return (*wire.error_body_for(DependencyTimeoutError(
                    "the audit log is unavailable")), resp.operation)
        return resp.status, resp.body, resp.operation

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False)


def xks_routes(endpoint: XksEndpoint) -> list[Route]:
    methods = ["POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return [Route("/{prefix:path}/kms/xks/v1/{rest:path}", endpoint.handle_request,
                  methods=methods,
                  include_in_schema=False)]


async def unknown_path(request: Request, exc: Exception) -> Response:
    """Any path that no route knows: the XKS 404."""
    from kms.errors import InvalidUriPathError

    return _json(*wire.error_body_for(InvalidUriPathError("unknown URI path")))
