"""``python -m kms.bench.count_edge`` (the fifteenth pass's instruction-count harness) runs
its requests through kms serve's app, with the real HSM call and with it stubbed, and fails
loudly if one is not answered 200."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("flags", [[], ["--stub-hsm"], ["--stub-hsm", "--sequential"]])
def test_count_edge_runs_its_requests(flags: list[str]) -> None:
    args = [sys.executable, "-m", "kms.bench.count_edge", "40", *flags]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
