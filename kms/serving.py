"""What one server process runs, without FastAPI: the shared state, the start-up and
shut-down of the helper processes and background threads, and :class:`ServingApp`, the
ASGI application of ``kms serve`` (one worker).

``ServingApp`` answers XKS from the moment the port opens, and builds the FastAPI
application of every other route (the admin API, ``/healthz``, ``/readyz``, ``/metrics``,
the OpenAPI document: kms/app.py) on a thread once it serves. Importing FastAPI and
pydantic and building the routes is ~0.45 s of CPU, about 40 % of a start: a restart
serves XKS (AWS KMS's callbacks) that much sooner. A request for another route that
arrives before that application is built waits for it (about half a second after the
start). ``create_app`` (kms/app.py) builds everything before serving, for several workers
and for tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import threading
from collections.abc import AsyncIterator, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from hsm.aio import AsyncHsm
from kms.audit.event import SYSTEM_ACTOR
from kms.hsmproc.channel import HsmWorker
from kms.logging import get_logger
from kms.runtime import Runtime
from kms.xks.handler import XksHandler
from kms.xks.routes import XksEndpoint

SWEEP_INTERVAL_S = 60.0
WRITER_START_WAIT_S = 10.0
XKS_MARK = "/kms/xks/v1/"
INTERNAL_ERROR = b'{"errorName":"InternalException","errorMessage":"internal error"}'
log = get_logger("kms.serve")


class AppState:
    """Per-process state the routes share (one per worker)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.ahsm = AsyncHsm(runtime.hsm)
        self.stop = threading.Event()
        handler = XksHandler(runtime.keys, runtime.cache, runtime.credentials, runtime.hsm,
                             runtime.clock, fleet_size=runtime.settings.fleet_size)
        self.xks = XksEndpoint(handler, runtime.audit,
                               workers=int(os.environ.get("KMS_XKS_THREADS", "8")),
                               inline=os.environ.get("KMS_XKS_INLINE", "1") != "0")


@contextlib.asynccontextmanager
async def lifespan(state: AppState, background: bool = True) -> AsyncIterator[None]:
    """On the serving loop: start the audit writer process (and the HSM worker), wait for
    it, start the background threads; on exit, stop them and close the runtime."""
    runtime = state.runtime
    runtime.audit.attach_loop()  # KMS_AUDIT_WRITER=process: the writer process starts
    worker = start_hsm_worker(state)  # KMS_HSM_WORKER=process, beside it
    # The port opens once it is ready (kms serve starts it ahead: kms/helper_channel.py
    # prespawn), not before: the first requests would wait for it, near AWS KMS's 250 ms
    # budget. A writer that is not ready in time does not stop the service: its records
    # wait for it or fail closed, and /readyz is 503 until it is ready.
    if not await runtime.audit.writer_ready(WRITER_START_WAIT_S):
        log.warning("audit_writer_not_ready", waited_s=WRITER_START_WAIT_S)
    if worker is not None and not await worker.wait_ready(WRITER_START_WAIT_S):
        # not fatal: until it is ready, the calls are made in this process
        log.warning("hsm_worker_not_ready", waited_s=WRITER_START_WAIT_S)
    if background:
        runtime.audit.start_checkpointing(runtime.settings.checkpoint_interval_s)
        threading.Thread(target=_sweeper, args=(state,), daemon=True,
                         name="deletion-sweeper").start()
    try:
        yield
    finally:
        state.stop.set()
        state.xks.shutdown()
        if worker is not None:
            worker.close()
        state.ahsm.shutdown()
        runtime.close()


def freeze_heap() -> None:
    """Move every object made so far (the imported modules, the routes, the runtime) out of
    the cyclic garbage collector's reach, and collect from now on. Without this, each full
    collection under load scanned them all and stopped the process for 44-79 ms (measured
    with gc.callbacks in `kms serve` under the bench's wrk load, 2026-11-29: 0.4-0.7 ms
    with it), every request waiting; those collections freed nothing. Cheap: it moves list
    heads. For a process of its own (`kms serve`): it would freeze a host's heap too."""
    gc.freeze()
    gc.enable()


def start_hsm_worker(state: AppState) -> HsmWorker | None:
    """On the serving loop: the HSM worker process for the XKS encrypt and decrypt calls
    (kms/hsmproc/), unless KMS_HSM_WORKER=off or the HSM was injected (tests)."""
    runtime = state.runtime
    config = runtime.hsm_worker_config
    if config is None or not state.xks.inline:
        return None
    worker = HsmWorker(config, asyncio.get_running_loop())
    worker.start()
    state.xks.hsm_worker = worker
    return worker


def _sweeper(state: AppState) -> None:
    """Destroy keys whose deletion waiting period ended."""
    while not state.stop.wait(SWEEP_INTERVAL_S):
        with contextlib.suppress(Exception):
            state.runtime.keys.sweep_due_deletions(SYSTEM_ACTOR)


class ServingApp:
    """``kms serve``'s ASGI application (one worker): XKS at once, the rest (``build``,
    called on a thread once the port is about to open) as soon as it is built."""

    def __init__(self, state: AppState, build: Callable[[AppState], ASGIApp], *,
                 background: bool = True, freeze_gc: bool = False) -> None:
        """``freeze_gc`` (``kms serve``, a process of its own): :func:`freeze_heap` once
        started and again once built."""
        self.state = state
        self._build = build
        self._background = background
        self._freeze_gc = freeze_gc
        self._api: ASGIApp | None = None
        self._building: concurrent.futures.Future[ASGIApp] = concurrent.futures.Future()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and XKS_MARK in scope["path"]:
            await self.state.xks.asgi(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            api = self._api
            if api is None:  # not built yet: wait for it
                try:
                    api = await asyncio.wrap_future(self._building)
                except Exception:  # logged once, as api_build_failed
                    if scope["type"] == "http":
                        await send({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json")]})
                        await send({"type": "http.response.body", "body": INTERNAL_ERROR})
                    return
            await api(scope, receive, send)

    def start_building(self) -> None:
        """Build the rest on a thread (its imports hold the GIL in short turns: XKS
        requests are served meanwhile)."""
        def build() -> None:
            # With freeze_gc, no collection during the build (its imports would set off a
            # full one, ~15 ms with every request waiting); what it made is frozen after it.
            if self._freeze_gc:
                gc.disable()
            try:
                api = self._build(self.state)
            except Exception as exc:  # the other routes answer 500; XKS is served on
                log.error("api_build_failed", error_type=type(exc).__name__)
                self._building.set_exception(exc)
                return
            finally:
                if self._freeze_gc:
                    freeze_heap()
            self._api = api
            self._building.set_result(api)

        threading.Thread(target=build, name="api-build", daemon=True).start()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol around :func:`lifespan`."""
        await receive()  # lifespan.startup
        context = lifespan(self.state, self._background)
        try:
            await context.__aenter__()
        except BaseException:
            await send({"type": "lifespan.startup.failed", "message": "start-up failed"})
            raise
        if self._freeze_gc:
            freeze_heap()  # kms serve disabled collection for its start
        self.start_building()
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        try:
            await context.__aexit__(None, None, None)
        finally:
            await send({"type": "lifespan.shutdown.complete"})
