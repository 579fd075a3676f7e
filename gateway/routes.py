"""The HTTP edge: parse, call one :class:`gateway.proxy.Proxy` method, return its answer."""

from __future__ import annotations

import json

from fastapi import APIRouter, Header, Request
from starlette.responses import JSONResponse, Response

from gateway.errors import InvalidRequestError
from gateway.proxy import Proxy

MAX_BODY = 8 << 20


def make_router(proxy: Proxy) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @router.get("/v1/models")
    async def models(authorization: str | None = Header(default=None)) -> Response:
        return await proxy.list_models(authorization)

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request,
                               authorization: str | None = Header(default=None)) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise InvalidRequestError("the request body is too large")
        try:
            body = json.loads(raw)
        except ValueError:
            raise InvalidRequestError("the body is not valid JSON") from None
        return await proxy.chat_completions(authorization, body, request.headers)

    return router
