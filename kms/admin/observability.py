"""The ``/metrics`` endpoint (the per-request logging and metrics: kms/request_log.py)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from kms import metrics
from kms.clock import parse_iso
from kms.keys.model import KeyState
from kms.request_log import log
from kms.runtime import Runtime


def refresh_gauges(runtime: Runtime) -> None:
    """Keys by state, audit log size, checkpoint age, HSM reconnects: read at scrape time."""
    metrics.set_hsm_reconnects(int(getattr(runtime.hsm, "reconnects", 0)))
    counts = runtime.registry.count_by_state()
    metrics.set_key_states(counts, [s.value for s in KeyState])
    metrics.set_audit_size(runtime.audit.head().size)
    latest = runtime.audit.latest_checkpoint()
    age = None if latest is None else (
        runtime.clock() - parse_iso(latest[1])).total_seconds()
    metrics.set_checkpoint_age(age)


def metrics_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", tags=["operations"], response_class=Response,
                responses={200: {"content": {metrics.CONTENT_TYPE: {}},
                                 "description": "Prometheus text exposition"}})
    async def prometheus_metrics() -> Response:
        """Prometheus metrics of this process, or of every worker (multiprocess mode)."""
        try:
            await asyncio.to_thread(refresh_gauges, runtime)
        except Exception as exc:  # the counters are still worth serving
            log.warning("metrics_refresh_failed", error_type=type(exc).__name__)
        body = await asyncio.to_thread(metrics.render)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    return router
