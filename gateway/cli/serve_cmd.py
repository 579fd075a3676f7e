"""``gateway init`` and ``gateway serve``."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.output import emit
from gateway.settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="create GATEWAY_HOME, the master key file and the schema")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=init)
    p = sub.add_parser("serve", help="run the OpenAI-compatible proxy")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.set_defaults(handler=serve)


def init(args: argparse.Namespace) -> int:
    from gateway.db import create_schema, make_engine
    from gateway.master_key import create_key_file

    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.home.chmod(0o700)
    created = create_key_file(settings.master_key_path)
    engine = make_engine(settings.database_url)
    create_schema(engine)
    engine.dispose()
    emit(args, {"home": str(settings.home), "master_key": str(settings.master_key_path),
                "master_key_created": created, "database": _safe_url(settings.database_url)},
         f"gateway home: {settings.home}\nmaster key: {settings.master_key_path}"
         f" ({'created' if created else 'exists'})\ndatabase: "
         f"{_safe_url(settings.database_url)}")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway import log_config
    from gateway.app import create_app

    log_config.configure()
    app = create_app(Settings.from_env())
    # uvloop and httptools (both in uvicorn[standard]); no access log: the proxy logs one
    # line per request itself, with the request id, tenant and virtual key.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")
    return 0
