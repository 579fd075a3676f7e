"""The XKS HTTP edge: a raw ASGI front door (no FastAPI middleware, routing or body
parsing on the hot path; :class:`kms.app.KmsApp` hands it every path under ``/kms/xks/v1/``).

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
from starlette.types import Receive, Scope, Send

from hsm import HsmError, RebuildDeferred
from hsm.calls import GcmResult
from hsm.pkcs11_hsm import no_rebuild
from kms import metrics
from kms.audit.log import AuditLog
from kms.db.engine import WouldBlock, non_blocking
from kms.errors import (
    DependencyTimeoutError,
    InternalError,
    KmsError,
    UnsupportedOperationError,
    ValidationError,
)
from kms.hsmproc.channel import Fallback, HsmWorker
from kms.logging import REQUEST_ID
from kms.request_log import log_request, request_id_from, xks_log_line
from kms.xks import wire
from kms.xks.handler import HsmStep, XksHandler, XksRequest, XksResponse
from kms.xks.pacing import RefusalPacer

MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 5.0
JSON = "application/json"

Observer = Callable[[str, str, int, float], None]  # operation, method, status, seconds


def _json(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type=JSON)


class XksEndpoint:
    def __init__(self, handler: XksHandler, audit: AuditLog, *, workers: int = 8,
                 observe: Observer | None = metrics.observe_xks, inline: bool = True) -> None:
        self.handler = handler
        self.audit = audit
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xks")
        self.observe = observe
        self.inline = inline
        self.pacer = RefusalPacer()
        self.hsm_worker: HsmWorker | None = None  # kms serve's, once its loop runs

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The whole XKS request as one ASGI call: what RequestObservability and the
        FastAPI stack would do for it (request id, metrics, the error log line), without
        their per-request layers."""
        started = time.perf_counter()
        request_id = request_id_from(scope)
        bound = REQUEST_ID.set(request_id)
        status, name, flooding, audit_wait = 500, "unknown", False, None
        try:
            status, body, name, flooding, audit_wait = await self._handle_scope(scope, receive)
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"x-request-id", request_id.encode("ascii"))]})
            await send({"type": "http.response.body", "body": body})
        finally:
            seconds = time.perf_counter() - started
            # what RequestObservability would do (kms/request_log.py): the metrics, and the
            # log line of a refusal or error; a flood's refusals are counted, not logged
            if self.observe is not None:
                self.observe(name, scope["method"], status, seconds)
            if not flooding and xks_log_line(status):
                log_request(scope["method"], metrics.XKS_ROUTE, status, seconds,
                            audit_wait=audit_wait)
            REQUEST_ID.reset(bound)

    async def _handle_scope(self, scope: Scope,
                            receive: Receive) -> tuple[int, bytes, str, bool, float | None]:
        """(status, body, operation, whether the source is flooding: see pacing.py, the
        seconds the answer waited for its durable audit record, if it has one)."""
        declared = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                declared = v
                break
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return (*_oversize(), False, None)
        body = await _read_body(receive)
        if isinstance(body, tuple):
            return (*body, False, None)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        client = scope.get("client")
        req = XksRequest(
            method=scope["method"],
            raw_path=raw_path.decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body=body,
            source=client[0] if client else "")
        try:
            resp = None
            if self.inline:
                # Fast path on the loop: pure CPU work, then the one HSM call in the HSM
                # worker process, or here. Anything that would read the database (a cache
                # miss) raises WouldBlock before any HSM call, and an HSM call that would
                # first have to rebuild the connection (after a device error) raises
                # RebuildDeferred: the request then runs on a worker thread instead, and
                # the loop never waits for either.
                try:
                    with non_blocking(), no_rebuild():
                        step = self.handler.begin(req)
                except (WouldBlock, RebuildDeferred):
                    step = None
                resp = await self._complete(step) if isinstance(step, HsmStep) else step
            if resp is None:
                loop = asyncio.get_running_loop()
                resp = await loop.run_in_executor(self.pool, self.handler.process, req)
        except KmsError as exc:  # the handler answers its own errors; this is a safety net
            return (*wire.error_body_for(exc), "unknown", False, None)
        except Exception:
            return (*wire.error_body_for(InternalError("internal error")), "unknown", False,
                    None)
        if resp.flooding:  # the source's refusals wait for its slot (kms/xks/pacing.py)
            await asyncio.sleep(self.pacer.delay(req.source))
        if resp.event is None:
            return resp.status, resp.body, resp.operation, resp.flooding, None
        waiting = time.perf_counter()
        try:
            await self.audit.append_async(resp.event)
        except Exception:
            return (*wire.error_body_for(DependencyTimeoutError(
                "the audit log is unavailable")), resp.operation, False,
                time.perf_counter() - waiting)
        return (resp.status, resp.body, resp.operation, resp.flooding,
                time.perf_counter() - waiting)

    async def _complete(self, step: HsmStep) -> XksResponse:
        """Make ``step``'s HSM call (in the worker process if it can, else here or, when
        the call would wait for a rebuild, on a worker thread) and answer the request."""
        outcome: GcmResult | HsmError | None = None
        worker = self.hsm_worker
        if worker is not None:
            fut = worker.call(step.hsm_call)
            if fut is not None:
                result = await fut
                if not isinstance(result, Fallback):
                    outcome = result
        try:
            with non_blocking(), no_rebuild():
                if outcome is None:
                    outcome = self.handler.make_call(step)
                return self.handler.complete(step, outcome)
        except (WouldBlock, RebuildDeferred):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self._complete_sync, step, outcome)

    def _complete_sync(self, step: HsmStep, outcome: GcmResult | HsmError | None) -> XksResponse:
        if outcome is None:
            outcome = self.handler.make_call(step)
        return self.handler.complete(step, outcome)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False)


def _oversize() -> tuple[int, bytes, str]:
    return (*wire.error_body_for(UnsupportedOperationError(
        "the request body is larger than supported")), "oversize")


def _not_received(why: str) -> tuple[int, bytes, str]:
    return (*wire.error_body_for(ValidationError(f"the request body was not received{why}")),
            "slow-body")


async def _read_body(receive: Receive) -> bytes | tuple[int, bytes, str]:
    """The request body, or the XKS error to answer: over MAX_BODY_BYTES, not complete
    within BODY_TIMEOUT_S (a slow client), or the client went away."""
    cycle = getattr(receive, "__self__", None)
    if (getattr(cycle, "more_body", True) is False
            and not getattr(cycle, "waiting_for_100_continue", True)):
        # uvicorn holds the whole body already (the usual case): receive() returns at
        # once, so no timer is needed (a timer costs a few percent of the request).
        return await _collect(receive)
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):  # a slow client is cut off
            return await _collect(receive)
    except TimeoutError:
        return _not_received(" in time")


async def _collect(receive: Receive) -> bytes | tuple[int, bytes, str]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return _not_received("")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return _oversize()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def unknown_path(request: Request, exc: Exception) -> Response:
    """Any path that no route knows: the XKS 404."""
    from kms.errors import InvalidUriPathError

    return _json(*wire.error_body_for(InvalidUriPathError("unknown URI path")))
