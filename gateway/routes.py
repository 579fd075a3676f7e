"""The HTTP edge: parse, call one :class:`gateway.proxy.Proxy` method, return its answer.

Plain Starlette routes (no FastAPI dependency resolution or validation layer on the
request path: the proxy validates what it needs itself)."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import InvalidRequestError
from gateway.openapi import openapi_json
from gateway.proxy import Proxy

MAX_BODY = 8 << 20


def make_routes(proxy: Proxy) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(request: Request) -> Response:
        return await proxy.list_models(request.headers.get("authorization"))

    async def chat_completions(request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise InvalidRequestError("the request body is too large")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise InvalidRequestError("the request body is too large")
        try:
            body = json.loads(raw)
        except ValueError:
            raise InvalidRequestError("the body is not valid JSON") from None
        return await proxy.chat_completions(request.headers.get("authorization"), body,
                                            request.headers)

    return [Route("/healthz", healthz, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/openapi.json", openapi_json, methods=["GET"])]
