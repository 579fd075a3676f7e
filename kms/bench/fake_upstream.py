"""A minimal OpenAI-compatible upstream for the gateway benchmark: answers at once, so
what is measured is the gateway's own overhead. Run: ``python -m kms.bench.fake_upstream PORT``."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def chat(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0,
        "model": body.get("model", "bench-model"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}})


async def models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [
        {"id": "bench-model", "object": "model", "created": 0, "owned_by": "bench"}]})


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/v1/models", models)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                loop="uvloop", http="httptools", access_log=False)
