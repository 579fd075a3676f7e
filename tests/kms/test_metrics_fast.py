"""kms.metrics' cheaper observation path (the XKS front door's, the HSM calls'): what it
records must be exactly what prometheus-client's own ``inc``/``observe`` would record."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram

from kms import metrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples
            if not s.name.endswith("_created")}


def test_the_bisecting_observer_records_what_observe_records() -> None:
    amounts = [0.0, 0.0005, 0.00050001, 1.0, 10.0, 10.5, 1e9, *(
        random.uniform(0, 12) for _ in range(500)), *(random.expovariate(300) for _ in range(500))]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    h1 = Histogram("h", "h", ["op"], buckets=buckets, registry=ours)
    h2 = Histogram("h", "h", ["op"], buckets=buckets, registry=theirs)
    observe = metrics._observer(h1.labels("x"))
    for amount in amounts:
        observe(amount)
        h2.labels("x").observe(amount)
    assert _samples(ours) == _samples(theirs)
    c1, c2 = Counter("c", "c", registry=ours), Counter("c", "c", registry=theirs)
    add = metrics._adder(c1)
    for _ in range(7):
        add(1)
        c2.inc()
    assert _samples(ours) == _samples(theirs)


def test_an_unexpected_metric_object_falls_back_to_the_public_methods() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def inc(self, amount: float = 1) -> None:
            self.seen.append(amount)

        def observe(self, amount: float) -> None:
            self.seen.append(-amount)

    plain = Plain()
    metrics._adder(plain)(2)
    metrics._observer(plain)(3)
    assert plain.seen == [2, -3]


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_observe_xks_counts_an_answer_in_every_series_it_belongs_to() -> None:
    before = {
        "requests": _value("kms_requests_total", endpoint="xks.decrypt", outcome="400"),
        "http": _value("kms_http_requests_total", route=metrics.XKS_ROUTE, method="POST",
                       status="400"),
        "count": _value("kms_request_duration_seconds_count", endpoint="xks.decrypt"),
        "le": _value("kms_request_duration_seconds_bucket", endpoint="xks.decrypt",
                     le="0.005"),
        "sum": _value("kms_request_duration_seconds_sum", endpoint="xks.decrypt"),
        "worker": _value("kms_worker_requests"),
    }
    for seconds in (0.003, 0.02, 0.004):
        metrics.observe_xks("decrypt", "POST", 400, seconds)
    assert _value("kms_requests_total", endpoint="xks.decrypt",
                  outcome="400") == before["requests"] + 3
    assert _value("kms_http_requests_total", route=metrics.XKS_ROUTE, method="POST",
                  status="400") == before["http"] + 3
    assert _value("kms_request_duration_seconds_count",
                  endpoint="xks.decrypt") == before["count"] + 3
    assert _value("kms_request_duration_seconds_bucket", endpoint="xks.decrypt",
                  le="0.005") == before["le"] + 2  # cumulative: 0.003 and 0.004
    assert abs(_value("kms_request_duration_seconds_sum", endpoint="xks.decrypt")
               - before["sum"] - 0.027) < 1e-9
    assert _value("kms_worker_requests") == before["worker"] + 3


def test_observe_hsm_call_fills_the_histogram() -> None:
    labels = {"operation": "test_op", "outcome": "ok"}
    metrics.observe_hsm_call("test_op", "ok", 0.00007)
    metrics.observe_hsm_call("test_op", "ok", 0.3)
    assert metrics.REGISTRY.get_sample_value("kms_hsm_call_duration_seconds_count",
                                             labels) == 2
    assert metrics.REGISTRY.get_sample_value("kms_hsm_call_duration_seconds_bucket",
                                             {**labels, "le": "0.0001"}) == 1
