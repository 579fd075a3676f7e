"""The gateway's FastAPI application: ``create_app(settings, services=...)``.

One place maps errors to HTTP: a :class:`GatewayError` becomes its status and OpenAI's
error JSON; anything else a 500 without details.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from gateway.errors import GatewayError, InvalidRequestError, NotFoundError
from gateway.proxy import Proxy
from gateway.rate_limits import RateLimits
from gateway.routes import make_router
from gateway.services import Services, build_services
from gateway.settings import Settings
from gateway.upstream import Upstream

log = structlog.get_logger("gateway.app")


def _error(exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def create_app(settings: Settings, *, services: Services | None = None,
               upstream_transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    services = services or build_services(settings)
    upstream = Upstream(settings.upstream_timeout_seconds, transport=upstream_transport)
    proxy = Proxy(services.tenants, services.virtual_keys, services.provider_keys,
                  services.request_log, RateLimits(settings.rate_limit_storage), upstream)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await proxy.drain()
        await upstream.aclose()
        services.close()

    app = FastAPI(title="AI gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.proxy = proxy
    app.state.services = services
    app.include_router(make_router(proxy))

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error(NotFoundError("Unknown path."))
        return _error(InvalidRequestError(str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(InvalidRequestError("The request is malformed."))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal_error", error=type(exc).__name__)
        return _error(GatewayError("The gateway failed to handle the request."))

    return app
