"""A small OpenAI-compatible upstream for tests and demos, on loopback.

- ``POST /v1/chat/completions``: answers ``ANSWER(<last user message reversed>)``, plain
  or as SSE (with usage when ``stream_options.include_usage``); a message containing
  ``SLOW`` streams 100 chunks 0.1 s apart (to test client disconnects).
- ``GET /v1/models``: three models.
- A chat body it cannot answer (``messages`` not a non-empty array of objects) gets 400 in
  OpenAI's error shape, as a provider answers it (so a gateway that forwards it unchecked
  relays that 400); a message without ``content`` counts as empty.
- Every request's ``Authorization`` header (``authorizations``) and every chat body
  (``bodies``) is recorded; a key containing ``fail-429``
  gets 429 and one containing ``fail-500`` gets 500 (to test failover).

Run it alone: ``python -m tests.gateway.fake_upstream [port]``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

MODELS = ("gpt-4o-mini", "gpt-4o", "o3-mini")


def answer_for(prompt: str) -> str:
    return f"ANSWER({prompt[::-1]})"


class FakeUpstream:
    def __init__(self) -> None:
        self.authorizations: list[str] = []
        #: every chat request body, in order (to check what the provider saw)
        self.bodies: list[dict[str, Any]] = []
        self.stream_cancelled = threading.Event()
        self.app = self._make_app()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _make_app(self) -> FastAPI:
        app = FastAPI()

        def refused(auth: str) -> Response | None:
            if "fail-429" in auth:
                return JSONResponse({"error": {"message": "slow down", "type": "rate_limit_error",
                                               "code": "rate_limit_exceeded"}}, status_code=429)
            if "fail-500" in auth:
                return JSONResponse({"error": {"message": "boom", "type": "api_error",
                                               "code": None}}, status_code=500)
            return None

        @app.get("/v1/models")
        async def models(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            self.authorizations.append(auth)
            return refused(auth) or JSONResponse({"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in MODELS]})

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            self.authorizations.append(auth)
            if (r := refused(auth)) is not None:
                return r
            body = await request.json()
            self.bodies.append(body)
            messages = body.get("messages") if isinstance(body, dict) else None
            if (not isinstance(messages, list) or not messages
                    or not isinstance(messages[-1], dict)):
                return JSONResponse({"error": {
                    "message": "'messages' must be a non-empty array of objects",
                    "type": "invalid_request_error", "code": None, "param": "messages"}},
                    status_code=400)
            prompt = str(messages[-1].get("content") or "")
            text = answer_for(prompt)
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 7,
                     "total_tokens": len(prompt.split()) + 7}
            cid = f"chatcmpl-{int(time.time() * 1000)}"
            if not body.get("stream"):
                return JSONResponse({
                    "id": cid, "object": "chat.completion", "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": usage})
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            slow = "SLOW" in prompt
            return StreamingResponse(self._stream(cid, body["model"], text, usage,
                                                  include_usage, slow),
                                     media_type="text/event-stream")

        return app

    async def _stream(self, cid: str, model: str, text: str, usage: dict[str, int],
                      include_usage: bool, slow: bool) -> AsyncIterator[bytes]:
        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(chunk)}\n\n".encode()

        try:
            yield event({"role": "assistant", "content": ""})
            pieces = [text[i:i + 5] for i in range(0, len(text), 5)]
            if slow:
                pieces = [f"tick{i} " for i in range(100)]
            for piece in pieces:
                yield event({"content": piece})
                await asyncio.sleep(0.1 if slow else 0)
            yield event({}, "stop")
            if include_usage:
                chunk = {"id": cid, "object": "chat.completion.chunk", "created": 0,
                         "model": model, "choices": [], "usage": usage}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            self.stream_cancelled.set()
            raise

    def start(self, port: int = 0) -> FakeUpstream:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)


if __name__ == "__main__":
    up = FakeUpstream().start(int(sys.argv[1]) if len(sys.argv) > 1 else 8200)
    print(f"fake upstream at {up.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        up.stop()
