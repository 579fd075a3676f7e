"""Latency distributions of wrk runs merged into one (kms/bench/wrk.py), as the 10-minute
soak does for its five 2-minute segments (tests/reliability/test_sustained_load.py)."""

from __future__ import annotations

import json

import pytest

from kms.bench import wrk
from kms.bench.processes import EchoProcess
from kms.bench.wrk import QUANTILE_GRID, LoadResult, Prepared, merged_percentile_ms


def _run(requests: int, latency_ms: float) -> LoadResult:
    """A run whose every request took ``latency_ms``."""
    return LoadResult(rps=1.0, p50_ms=latency_ms, p99_ms=latency_ms, requests=requests,
                      errors=0, quantiles=tuple((p, latency_ms) for p in QUANTILE_GRID))


def _spread(requests: int, lo_ms: float, hi_ms: float) -> LoadResult:
    """A run whose latencies are spread evenly from ``lo_ms`` to ``hi_ms``."""
    q = tuple((p, lo_ms + (hi_ms - lo_ms) * p / 100) for p in QUANTILE_GRID)
    return LoadResult(1.0, q[49][1], q[-1][1], requests, 0, quantiles=q)


def test_merged_percentile_is_the_quantile_of_all_runs_together() -> None:
    # 990 answers at 2 ms in one run, 10 at 40 ms in another: the p99 of the whole is 2 ms
    # (the slow run's own p99 is 40), the p99.9 is 40.
    fast, slow = _run(990, 2.0), _run(10, 40.0)
    assert merged_percentile_ms([fast, slow], 0.99) == 2.0
    assert merged_percentile_ms([fast, slow], 0.999) == 40.0
    assert merged_percentile_ms([slow, fast], 0.99) == 2.0  # the order does not matter
    # 980 fast and 20 slow: the p99 is the slow one
    assert merged_percentile_ms([_run(980, 2.0), _run(20, 40.0)], 0.99) == 40.0
    # two runs of one even spread merge to that spread: p99 within one grid step (0.01 %)
    merged = merged_percentile_ms([_spread(500, 0.0, 100.0), _spread(1500, 0.0, 100.0)], 0.99)
    assert 99.0 <= merged <= 99.02
    # a run with twice the requests weighs twice: p50 of (1x [0, 10], 3x [10, 20]) is 13.33
    merged = merged_percentile_ms([_spread(1000, 0.0, 10.0), _spread(3000, 10.0, 20.0)], 0.5)
    assert 13.3 <= merged <= 13.4


def test_merged_percentile_refuses_runs_without_quantiles() -> None:
    with pytest.raises(ValueError):
        merged_percentile_ms([LoadResult(1.0, 1.0, 1.0, 10, 0)], 0.99)
    with pytest.raises(ValueError):
        merged_percentile_ms([_run(0, 1.0)], 0.99)


@pytest.mark.skipif(not wrk.available(), reason="wrk not installed (make install)")
def test_a_real_runs_quantiles_are_wrks_own() -> None:
    """The quantile function wrk reports agrees with its own p50 and p99, and merging a
    run with itself changes nothing."""
    echo = EchoProcess()
    try:
        body = json.dumps({"x": 1}).encode()
        req = Prepared("POST", "/echo", {"Content-Type": "application/json"}, body)
        r = wrk.run(echo.url + "/echo", [req], seconds=2, connections=8, threads=1,
                    quantiles=True, delay_ms=2)
    finally:
        echo.stop()
    assert r.quantiles is not None and r.requests > 100
    assert [p for p, _ in r.quantiles] == [round(p, 3) for p in QUANTILE_GRID]
    values = [ms for _, ms in r.quantiles]
    assert values == sorted(values) and values[-1] == r.max_ms
    assert dict(r.quantiles)[50.0] == r.p50_ms and dict(r.quantiles)[99.0] == r.p99_ms
    assert merged_percentile_ms([r], 0.99) == r.p99_ms
    assert merged_percentile_ms([r, r], 0.99) == r.p99_ms
