"""The HTTP application: ``create_app(runtime)`` builds FastAPI with every router.

Routes are thin: they parse, call one service method, serialize. Errors are mapped in one
place (kms/errors.py holds the table; kms/xks/wire.py renders XKS bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from hsm.aio import AsyncHsm
from kms import metrics
from kms.admin.observability import RequestObservability, metrics_router
from kms.admin.routes import admin_router
from kms.audit.event import SYSTEM_ACTOR
from kms.errors import KmsError
from kms.hsmproc.channel import HsmWorker
from kms.logging import configure_logging, get_logger
from kms.runtime import Runtime
from kms.settings import HEALTH_KEY_LABEL, Settings
from kms.xks.handler import XksHandler
from kms.xks.routes import XksEndpoint, unknown_path

SWEEP_INTERVAL_S = 60.0
WRITER_START_WAIT_S = 10.0


class AppState:
    """Per-process state the routes share (one per worker)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.ahsm = AsyncHsm(runtime.hsm)
        self.stop = threading.Event()
        handler = XksHandler(runtime.keys, runtime.cache, runtime.credentials, runtime.hsm,
                             runtime.clock, fleet_size=runtime.settings.fleet_size)
        self.xks = XksEndpoint(handler, runtime.audit, observe=metrics.observe_xks,
                               workers=int(os.environ.get("KMS_XKS_THREADS", "8")),
                               inline=os.environ.get("KMS_XKS_INLINE", "1") != "0")


XKS_MARK = "/kms/xks/v1/"
log = get_logger("kms.serve")


class KmsApp(FastAPI):
    """FastAPI, with a front door for the XKS API: every HTTP request whose path holds
    ``/kms/xks/v1/`` goes straight to :meth:`XksEndpoint.asgi` (which answers unknown
    prefixes and paths with the XKS 404 itself), past the middleware stack and the
    router, which cost about as much per request as the XKS work (docs/benchmarks.md)."""

    xks: XksEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.xks is not None and XKS_MARK in scope["path"]:
            await self.xks.asgi(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(runtime: Runtime, *, background: bool = True) -> FastAPI:
    state = AppState(runtime)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.audit.attach_loop()  # KMS_AUDIT_WRITER=process: the writer process starts
        worker = start_hsm_worker(state)  # KMS_HSM_WORKER=process, beside it
        # The port opens once it is ready (about 0.2-0.3 s: its imports and its database
        # connection), not before: the first requests would wait for it, near AWS KMS's
        # 250 ms budget. A writer that is not ready in time does not stop the service: its
        # records wait for it or fail closed, and /readyz is 503 until it is ready.
        if not await runtime.audit.writer_ready(WRITER_START_WAIT_S):
            log.warning("audit_writer_not_ready", waited_s=WRITER_START_WAIT_S)
        if worker is not None and not await worker.wait_ready(WRITER_START_WAIT_S):
            # not fatal: until it is ready, the calls are made in this process
            log.warning("hsm_worker_not_ready", waited_s=WRITER_START_WAIT_S)
        if background:
            runtime.audit.start_checkpointing(runtime.settings.checkpoint_interval_s)
            threading.Thread(target=_sweeper, args=(state,), daemon=True,
                             name="deletion-sweeper").start()
        yield
        state.stop.set()
        state.xks.shutdown()
        if worker is not None:
            worker.close()
        state.ahsm.shutdown()
        runtime.close()

    app = KmsApp(title="CMK service (XKS proxy)", version="0.1.0", lifespan=lifespan)
    app.state.kms = state
    install_xks(app, state)
    app.include_router(admin_router(runtime))
    app.include_router(metrics_router(runtime))
    app.add_middleware(RequestObservability)
    _build_routes(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Readiness: a real HSM round trip, the database and the audit log head."""
        body: dict[str, Any] = {}
        ok = True
        report = await state.ahsm.call(runtime.hsm.probe, HEALTH_KEY_LABEL)
        body["hsm"] = {"status": report.status.value, "latencyMs": round(report.latency_ms, 3),
                       "detail": report.detail}
        ok &= report.status.value != "UNAVAILABLE"
        try:
            await asyncio.to_thread(runtime.registry.epoch)
            head = await asyncio.to_thread(runtime.audit.head)
            body["database"] = {"status": "ok"}
            body["audit"] = {"status": "ok", "size": head.size}
        except KmsError as exc:
            ok = False
            body["database"] = {"status": "unavailable", "error": exc.error_name}
        except Exception:
            ok = False
            body["database"] = {"status": "unavailable"}
        try:  # the audit writer process (KMS_AUDIT_WRITER=process), started if it is not
            body.setdefault("audit", {}).update(runtime.audit.writer_status())
        except KmsError as exc:
            ok = False
            body.setdefault("audit", {}).update(status="unavailable", error=exc.error_name)
        worker = state.xks.hsm_worker
        if worker is not None:  # informational: without it the calls are made here
            body["hsm"]["worker"] = {"pid": worker.pid, "ready": worker.ready,
                                     "answered": worker.answered,
                                     "fallbacks": worker.fallbacks}
        body["status"] = "ready" if ok else "unavailable"
        return JSONResponse(body, status_code=200 if ok else 503)

    return app


def _build_routes(app: FastAPI) -> None:
    """Build the routes now rather than on the first request. FastAPI (0.16x) builds each
    included router's routes when a request first reaches it: ~0.16 s on this VM (0.8 s
    under a profiler), during which the event loop serves nobody, XKS requests included
    (the first /healthz after a start took 162-169 ms). Matching any path builds them."""
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/healthz",
                             "root_path": "", "query_string": b"", "headers": []}
    for route in app.router.routes:
        route.matches(scope)


def install_xks(app: KmsApp, state: AppState) -> None:
    """The XKS front door, and the XKS 404 body for every other unknown path."""
    app.xks = state.xks
    app.add_exception_handler(404, unknown_path)


def start_hsm_worker(state: AppState) -> HsmWorker | None:
    """On the serving loop: the HSM worker process for the XKS encrypt and decrypt calls
    (kms/hsmproc/), unless KMS_HSM_WORKER=off or the HSM was injected (tests)."""
    runtime = state.runtime
    config = runtime.hsm_worker_config
    if config is None or not state.xks.inline:
        return None
    worker = HsmWorker(config, asyncio.get_running_loop())
    worker.start()
    state.xks.hsm_worker = worker
    return worker


def _sweeper(state: AppState) -> None:
    """Destroy keys whose deletion waiting period ended."""
    while not state.stop.wait(SWEEP_INTERVAL_S):
        with contextlib.suppress(Exception):
            state.runtime.keys.sweep_due_deletions(SYSTEM_ACTOR)


def create_app_from_env() -> FastAPI:
    """The uvicorn factory (``kms serve``): one Runtime per worker process."""
    configure_logging()
    settings = Settings.from_env()
    return create_app(Runtime.open(settings, audit_writer=settings.audit_writer))
