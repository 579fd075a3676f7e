"""The HTTP application: ``create_app(runtime)`` builds FastAPI with every router.

Routes are thin: they parse, call one service method, serialize. Errors are mapped in one
place (kms/errors.py holds the table; kms/xks/wire.py renders XKS bodies). What runs
without FastAPI (the shared state, start-up and shut-down, and ``kms serve``'s ASGI
application, which serves XKS before this module is imported) is in kms/serving.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from kms.admin.observability import metrics_router
from kms.admin.routes import add_error_schema, admin_router
from kms.errors import KmsError
from kms.logging import configure_logging
from kms.request_log import RequestObservability
from kms.runtime import Runtime
from kms.serving import XKS_MARK, AppState, lifespan
from kms.settings import HEALTH_KEY_LABEL, Settings
from kms.xks.routes import XksEndpoint, unknown_path

TITLE = "CMK service (XKS proxy)"
VERSION = "0.1.0"


class ApiApp(FastAPI):
    """FastAPI, whose OpenAPI document holds the schema of the admin API's error body."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            add_error_schema(super().openapi())
        return super().openapi()


class KmsApp(ApiApp):
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
    """Everything, built now: the XKS front door, every other route, and the lifespan
    (kms/serving.py) that starts and stops the helper processes and threads."""
    state = AppState(runtime)

    @contextlib.asynccontextmanager
    async def app_lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(state, background):
            yield

    app = KmsApp(title=TITLE, version=VERSION, lifespan=app_lifespan)
    app.xks = state.xks
    _add_routes(app, state)
    return app


def create_api(state: AppState) -> FastAPI:
    """Every route but XKS, for :class:`kms.serving.ServingApp` (which runs the lifespan and
    serves XKS itself). Built on a thread: nothing is left for the first request to build."""
    app = ApiApp(title=TITLE, version=VERSION)
    _add_routes(app, state)
    app.middleware_stack = app.build_middleware_stack()
    return app


def _add_routes(app: FastAPI, state: AppState) -> None:
    runtime = state.runtime
    app.state.kms = state
    app.add_exception_handler(404, unknown_path)  # the XKS 404 body for unknown paths
    app.include_router(admin_router(runtime))
    app.include_router(metrics_router(runtime))
    app.add_middleware(RequestObservability)

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

    _build_routes(app)


def _build_routes(app: FastAPI) -> None:
    """Leave no one-off work to the first requests, which run on the event loop that also
    serves XKS (tests/admin/test_startup.py). FastAPI (0.16x) builds each included
    router's routes when a request first reaches it: ~0.16 s on this VM (the first
    /healthz after a start took 162-169 ms); matching any path builds them. And it reads
    each endpoint's source lines (for its error messages) on the endpoint's first request:
    18-64 ms on the loop for the first of a file; reading them here fills its cache."""
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/healthz",
                             "root_path": "", "query_string": b"", "headers": []}
    for route in app.router.routes:
        route.matches(scope)
    extract = getattr(fastapi.routing, "_extract_endpoint_context", None)
    if extract is not None:
        for endpoint in endpoints(app.router.routes):
            extract(endpoint)


def endpoints(routes: list[Any]) -> Iterator[Callable[..., Any]]:
    """The endpoint functions of ``routes`` and of the routers included in them."""
    for route in routes:
        endpoint = getattr(route, "endpoint", None)
        if callable(endpoint):
            yield endpoint
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from endpoints(included.routes)


def create_app_from_env() -> FastAPI:
    """The uvicorn factory (``kms serve``): one Runtime per worker process."""
    configure_logging()
    settings = Settings.from_env()
    return create_app(Runtime.open(settings, audit_writer=settings.audit_writer))
