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


def main() -> None:
    """``python -m kms.bench.echo_app PORT``: served exactly as ``kms serve`` serves (uvloop,
    the same httptools protocol class with its header deadline and corked writes)."""
    import sys

    import uvicorn

    from kms.http_protocol import HeaderTimeoutProtocol

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop",
                http=HeaderTimeoutProtocol, log_level="warning", access_log=False,
                log_config=None)


if __name__ == "__main__":
    main()
