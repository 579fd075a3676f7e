"""The gateway's ASGI application (Starlette): ``create_app(settings, services=...)``.

One place maps errors to HTTP: a :class:`GatewayError` becomes its status and OpenAI's
error JSON; anything else a 500 without details.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
)
from gateway.proxy import Proxy
from gateway.rate_limits import RateLimits
from gateway.routes import make_routes
from gateway.services import Services, build_services
from gateway.settings import Settings
from gateway.upstream import Upstream

log = structlog.get_logger("gateway.app")


def _error(exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def create_app(settings: Settings, *, services: Services | None = None) -> Starlette:
    services = services or build_services(settings)
    upstream = Upstream(settings.upstream_timeout_seconds)
    proxy = Proxy(services.tenants, services.virtual_keys, services.provider_keys,
                  services.request_log, RateLimits(settings.rate_limit_storage), upstream)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.drain()
        await upstream.aclose()
        services.close()

    async def gateway_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return _error(exc)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return _error(NotFoundError("Unknown path."))
        if exc.status_code == 405:  # Starlette's routing sets Allow: the path's methods
            return _error(MethodNotAllowedError("Method not allowed for this path.",
                                                dict(exc.headers or {})))
        return _error(InvalidRequestError(str(exc.detail)))

    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal_error", error=type(exc).__name__)
        return _error(GatewayError("The gateway failed to handle the request."))

    app = Starlette(routes=make_routes(proxy), lifespan=lifespan, exception_handlers={
        GatewayError: gateway_error, HTTPException: http_error, Exception: internal_error})
    app.state.proxy = proxy
    app.state.services = services
    return app
