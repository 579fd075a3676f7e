"""The baseline: a trivial async FastAPI endpoint on the same server stack as ``kms serve``
(uvicorn, uvloop, httptools, one worker)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

app = FastAPI()


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")
