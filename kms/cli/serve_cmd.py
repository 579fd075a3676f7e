"""``kms serve``: the HTTP service under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from typing import TYPE_CHECKING, Any

from kms.cli.main import command
from kms.helper_channel import prespawn
from kms.settings import Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from kms.runtime import Runtime
    from kms.serving import AppState

# LoopChannel.module (kms/audit/writer_process.py), named here so that it is started before
# that module and the rest of the service are imported (tests/audit/test_writer_process.py
# checks that the two names agree).
AUDIT_WRITER_MODULE = "kms.audit.writer_process"


def register(sub: Any, json_flag: Any) -> None:
    p = command(sub, "serve", _serve, "run the XKS, admin and operations HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--tls-cert", help="PEM certificate chain (enables HTTPS)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates (mTLS)")
    p.add_argument("--log-level", default="warning")


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.workers == 1:  # (several workers: each is a process of its own, uvicorn's)
        # No cyclic garbage collection while starting: the imports set off 20-odd
        # collections (a full one 14-20 ms) that find next to nothing. ServingApp (freeze_gc)
        # freezes what the start made and enables it again before the port opens; a start
        # that fails exits.
        gc.disable()
        if settings.audit_writer == "process":
            # Its interpreter start and imports overlap ours: a restart serves ~0.4 s
            # sooner. (Several workers: each starts its own in kms.serving.lifespan.)
            prespawn(AUDIT_WRITER_MODULE)
    import ssl

    import uvicorn

    from kms.http_protocol import HeaderTimeoutProtocol
    from kms.logging import configure_logging
    from kms.metrics import MULTIPROC_ENV, fresh_multiproc_dir
    from kms.runtime import Runtime

    # The server's threads (the XKS worker threads; the audit writer thread with
    # KMS_AUDIT_WRITER=thread) hand off the GIL around every blocking call; with the
    # default 5 ms switch interval each then waits behind the event loop for up to 5 ms.
    sys.setswitchinterval(float(os.environ.get("KMS_SWITCH_INTERVAL", "0.0005")))
    # Open once before serving: a wrong set-up fails here with a clear message. With one
    # worker this runtime serves; with several, each worker process opens its own.
    runtime = Runtime.open(settings, audit_writer=settings.audit_writer)
    store_prefix = _default_prefix(runtime)
    if args.workers > 1:
        runtime.close()
    if settings.own_softhsm_conf:
        os.environ["SOFTHSM2_CONF"] = str(settings.softhsm_conf)
    scheme = "https" if args.tls_cert else "http"
    print(f"kms: serving on {scheme}://{args.host}:{args.port} with {args.workers} worker(s)",
          file=sys.stderr)
    if store_prefix:
        print(f"kms: XKS endpoint {scheme}://{args.host}:{args.port}/{store_prefix}/kms/xks/v1",
              file=sys.stderr)
    kwargs: dict[str, Any] = {}
    if args.tls_cert:
        kwargs.update(ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
        if args.tls_client_ca:
            kwargs.update(ssl_ca_certs=args.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    configure_logging()  # JSON lines from the supervisor too ($KMS_LOG_LEVEL)
    if args.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # Workers are spawned and inherit this before they import prometheus-client.
        os.environ[MULTIPROC_ENV] = fresh_multiproc_dir(settings.home)
    common: dict[str, Any] = {"host": args.host, "port": args.port, "log_config": None,
                              "loop": "uvloop", "http": HeaderTimeoutProtocol,
                              "log_level": args.log_level, "access_log": False,
                              "timeout_keep_alive": 30, **kwargs}
    if args.workers > 1:
        uvicorn.run("kms.app:create_app_from_env", factory=True, workers=args.workers,
                    **common)
    else:
        # XKS from the first request; FastAPI (every other route) is imported and built on
        # a thread once serving (kms/serving.py).
        from kms.serving import AppState, ServingApp

        app = ServingApp(AppState(runtime), _build_api, freeze_gc=True)
        uvicorn.run(app, lifespan="on", **common)
    return 0


def _build_api(state: AppState) -> ASGIApp:
    from kms.app import create_api

    return create_api(state)


def _default_prefix(runtime: Runtime) -> str | None:
    try:
        return runtime.registry.get_store("default").uri_prefix
    except Exception:
        return None
