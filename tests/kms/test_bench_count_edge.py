"""The instruction-count harnesses. ``python -m kms.bench.count_edge`` (fifteenth pass)
runs its requests through kms serve's app, with the real HSM call and with it stubbed, and
fails loudly if one is not answered 200; ``python -m kms.bench.count_append`` (seventeenth
pass) appends its records through the writer process and fails if the log lacks one."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("flags", [[], ["--stub-hsm"], ["--stub-hsm", "--sequential"]])
def test_count_edge_runs_its_requests(flags: list[str]) -> None:
    args = [sys.executable, "-m", "kms.bench.count_edge", "40", *flags]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("flags", [[], ["--asyncio"]])
def test_count_append_appends_exactly_its_records(flags: list[str]) -> None:
    """``python -m kms.bench.count_append`` (the seventeenth pass's harness): 32 times N records
    and the warm-up, each committed once, in the log it checks."""
    args = [sys.executable, "-m", "kms.bench.count_append", "5", *flags]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "180 records appended" in done.stdout
