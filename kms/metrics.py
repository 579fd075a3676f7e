"""Prometheus metrics: the metric objects, small functions to observe them, and exposition.

Other modules report through the functions here (``observe_request``, ``observe_hsm_call``,
``observe_audit_batch``...) rather than touching metric objects, so names and labels stay
in one place (docs/operations.md, "Metrics").

Several workers (``kms serve --workers N``) share one directory of memory-mapped files:
when ``PROMETHEUS_MULTIPROC_DIR`` is set *before this module is first imported* (``kms
serve`` sets it to a fresh directory under ``$KMS_HOME`` for N > 1), prometheus-client
writes every value there and :func:`render` aggregates all workers' files. Counters and
histograms are summed over workers; the state gauges keep the most recent value.

Labels hold route templates, operation names and outcome names only: never a key id, a
token, a path with values in it, or anything a client chose.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

from hsm import AesUsage, HealthReport, RebuildDeferred
from hsm.interface import Hsm
from hsm.types import GcmCiphertext, KeyAttributes

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: The route label of every XKS request (its path carries the store's prefix and key id)
XKS_ROUTE: Final = "/{prefix}/kms/xks/v1/{rest}"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

#: Where the metric objects live (never the prometheus-client global default registry).
REGISTRY: Final = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
_HSM_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0)  # 0.25: AWS KMS's budget for one XKS call
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

REQUESTS: Final = Counter(
    "kms_requests_total", "Requests by endpoint and outcome (ok or the errorName)",
    ["endpoint", "outcome"], registry=REGISTRY)
REQUEST_LATENCY: Final = Histogram(
    "kms_request_duration_seconds", "Request latency by endpoint, from first byte in to "
    "response sent", ["endpoint"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
HTTP_REQUESTS: Final = Counter(
    "kms_http_requests_total", "Every HTTP request by route template and status code",
    ["route", "method", "status"], registry=REGISTRY)
HSM_LATENCY: Final = Histogram(
    "kms_hsm_call_duration_seconds", "HSM (PKCS#11) call latency, lock wait included; "
    "the server's own calls and its HSM worker process's",
    ["operation", "outcome"], buckets=_HSM_BUCKETS, registry=REGISTRY)
AUDIT_APPEND_LATENCY: Final = Histogram(
    "kms_audit_append_duration_seconds", "Time to commit one group-commit batch of audit "
    "records", buckets=_LATENCY_BUCKETS, registry=REGISTRY)
AUDIT_BATCH_SIZE: Final = Histogram(
    "kms_audit_batch_size", "Audit records per group-commit batch", buckets=_BATCH_BUCKETS,
    registry=REGISTRY)
KEYS_BY_STATE: Final = Gauge(
    "kms_keys", "Keys by state (refreshed on every scrape)", ["state"],
    multiprocess_mode="mostrecent", registry=REGISTRY)
CHECKPOINT_AGE: Final = Gauge(
    "kms_audit_checkpoint_age_seconds", "Age of the latest signed audit checkpoint "
    "(refreshed on every scrape; -1 when there is none)", multiprocess_mode="mostrecent",
    registry=REGISTRY)
AUDIT_SIZE: Final = Gauge(
    "kms_audit_log_size", "Records in the audit log (refreshed on every scrape)",
    multiprocess_mode="mostrecent", registry=REGISTRY)
HSM_RECONNECTS: Final = Gauge(
    "kms_hsm_reconnects", "Times this process rebuilt its HSM connection (finalize, "
    "initialize, login) since it started (refreshed on every scrape)",
    multiprocess_mode="livesum", registry=REGISTRY)

WORKER_REQUESTS: Final = Gauge(
    "kms_worker_requests", "Requests served by each worker process since it started "
    "(one series per pid with --workers N)", multiprocess_mode="all", registry=REGISTRY)


def fresh_multiproc_dir(home: Path) -> str:
    """A new, empty directory for this run's metric files under ``home/metrics``."""
    parent = home / "metrics"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return tempfile.mkdtemp(prefix="prometheus-", dir=parent)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


# -- observing ---------------------------------------------------------------------------

#: per (metric, label values): the labelled child's ``inc`` or ``observe``, looked up once
#: (``labels()`` takes the metric's lock and checks every value on each call)
_RECORDERS: dict[tuple[int, tuple[str, ...]], Callable[[float], None]] = {}
_MAX_CHILDREN = 4096  # the label sets are bounded (see above); past this, look up each time


def _recorder(metric: Any, *values: str) -> Callable[[float], None]:
    key = (id(metric), values)  # the metrics are module constants: ids stay valid
    record = _RECORDERS.get(key)
    if record is None:
        child = metric.labels(*values) if values else metric
        record = _observer(child) if isinstance(metric, Histogram) else _adder(child)
        if len(_RECORDERS) < _MAX_CHILDREN:
            _RECORDERS[key] = record
    return record


def _adder(child: Any) -> Callable[[float], None]:
    """``child.inc`` without prometheus-client's per-call checks (observability, a
    non-negative amount: both hold by construction here): the value's own ``inc``, which
    takes its lock or writes its memory-mapped file. The public method if this version of
    prometheus-client keeps its value elsewhere."""
    inc = getattr(getattr(child, "_value", None), "inc", None)
    return inc if callable(inc) else child.inc  # type: ignore[no-any-return]


def _observer(child: Any) -> Callable[[float], None]:
    """``child.observe`` as :func:`_adder` does ``inc``: the sum, and the one bucket found
    by bisection (prometheus-client scans the bounds in Python; it keeps one count per
    bucket and adds them up when scraped)."""
    try:
        add_sum = child._sum.inc
        buckets = tuple(bucket.inc for bucket in child._buckets)
        bounds = tuple(child._upper_bounds)
    except AttributeError:
        return child.observe  # type: ignore[no-any-return]
    if len(buckets) != len(bounds) or bounds[-1] != math.inf:
        return child.observe  # type: ignore[no-any-return]

    def observe(amount: float) -> None:
        add_sum(amount)
        buckets[bisect_left(bounds, amount)](1)  # the first bound >= amount, as observe()

    return observe


def observe_request(endpoint: str, outcome: str, seconds: float) -> None:
    """One request to ``endpoint`` (a fixed name, e.g. ``xks.encrypt`` or an admin route
    template) that ended with ``outcome`` (``ok`` or the errorName)."""
    _recorder(REQUESTS, endpoint, outcome)(1)
    _recorder(REQUEST_LATENCY, endpoint)(seconds)
    _recorder(WORKER_REQUESTS)(1)


def outcome_for_status(status: int) -> str:
    """``ok`` below 400, else the status code (when no errorName is known)."""
    return "ok" if status < 400 else str(status)


def observe_xks(name: str, method: str, status: int, seconds: float) -> None:
    """The ``XksEndpoint(observe=...)`` callback, once per answer (``name`` is the XKS
    operation): what the middleware (kms/request_log.py) counts for any other request."""
    observe_request(f"xks.{name}", outcome_for_status(status), seconds)
    observe_http(XKS_ROUTE, method, status)


def observe_http(route: str, method: str, status: int) -> None:
    _recorder(HTTP_REQUESTS, route, method, str(status))(1)


def observe_hsm_call(operation: str, outcome: str, seconds: float) -> None:
    _recorder(HSM_LATENCY, operation, outcome)(seconds)


def observe_audit_batch(size: int, seconds: float) -> None:
    """The ``AuditLog(on_batch=...)`` callback: one committed group-commit batch."""
    AUDIT_BATCH_SIZE.observe(size)
    AUDIT_APPEND_LATENCY.observe(seconds)


def set_key_states(counts: dict[str, int], states: list[str]) -> None:
    for state in states:
        KEYS_BY_STATE.labels(state).set(counts.get(state, 0))


def set_checkpoint_age(seconds: float | None) -> None:
    CHECKPOINT_AGE.set(-1 if seconds is None else seconds)


def set_hsm_reconnects(count: int) -> None:
    HSM_RECONNECTS.set(count)


def set_audit_size(size: int) -> None:
    AUDIT_SIZE.set(size)


# -- exposition --------------------------------------------------------------------------

def render() -> bytes:
    """The text exposition of this process, or of every worker in multiprocess mode."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def mark_process_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (multiprocess mode only)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        prom_multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


# -- HSM instrumentation ----------------------------------------------------------------

class InstrumentedHsm:
    """An :class:`hsm.interface.Hsm` that times every call into the wrapped one."""

    def __init__(self, inner: Hsm) -> None:
        self.inner = inner

    @property
    def reconnects(self) -> int:
        """Connection rebuilds of the wrapped HSM (0 for one that has none)."""
        return int(getattr(self.inner, "reconnects", 0))

    def _timed(self, operation: str, fn: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = fn(*args)
            outcome = "ok"
            return result
        except RebuildDeferred:  # not a call to the HSM: retried on a worker thread
            outcome = "deferred"
            raise
        finally:
            observe_hsm_call(operation, outcome, time.perf_counter() - started)

    def generate_aes_key(self, label: str, usages: Collection[AesUsage]) -> None:
        self._timed("generate_aes_key", self.inner.generate_aes_key, label, usages)

    def has_key(self, label: str) -> bool:
        return bool(self._timed("has_key", self.inner.has_key, label))

    def list_aes_keys(self) -> list[str]:
        result: list[str] = self._timed("list_aes_keys", self.inner.list_aes_keys)
        return result

    def key_attributes(self, label: str) -> KeyAttributes:
        result: KeyAttributes = self._timed("key_attributes", self.inner.key_attributes, label)
        return result

    def destroy_key(self, label: str) -> None:
        self._timed("destroy_key", self.inner.destroy_key, label)

    def encrypt(self, label: str, plaintext: bytes, aad: bytes) -> GcmCiphertext:
        result: GcmCiphertext = self._timed("encrypt", self.inner.encrypt, label, plaintext,
                                            aad)
        return result

    def decrypt(self, label: str, iv: bytes, ciphertext: bytes, tag: bytes,
                aad: bytes) -> bytes:
        result: bytes = self._timed("decrypt", self.inner.decrypt, label, iv, ciphertext,
                                    tag, aad)
        return result

    def generate_ec_signing_key(self, label: str) -> None:
        self._timed("generate_ec_signing_key", self.inner.generate_ec_signing_key, label)

    def sign(self, label: str, message: bytes) -> bytes:
        result: bytes = self._timed("sign", self.inner.sign, label, message)
        return result

    def public_key_pem(self, label: str) -> bytes:
        result: bytes = self._timed("public_key_pem", self.inner.public_key_pem, label)
        return result

    def random_bytes(self, n: int) -> bytes:
        result: bytes = self._timed("random_bytes", self.inner.random_bytes, n)
        return result

    def probe(self, health_key_label: str) -> HealthReport:
        result: HealthReport = self._timed("probe", self.inner.probe, health_key_label)
        return result

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Anything beyond the Hsm protocol (e.g. test helpers) goes to the wrapped HSM.
        return getattr(self.inner, name)
