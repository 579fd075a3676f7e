"""The kill switch across processes: a revoke in one process, refusal in another."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kms.audit.event import cli_actor
from kms.keys.model import KeyUsage
from tests.conftest import ROOT
from tests.kms.conftest import RuntimeFactory, runtime_env

BOUND_S = 1.0


@pytest.mark.parametrize("rounds", [3])
def test_revoke_is_refused_by_another_process_within_one_second(
    make_runtime: RuntimeFactory, db_url: str, tmp_path: Path, rounds: int
) -> None:
    rt = make_runtime(db_url)
    rt.keys.create_key("k", frozenset({KeyUsage.ENCRYPT, KeyUsage.DECRYPT}), cli_actor())
    env = dict(os.environ, **runtime_env(tmp_path, db_url, rt.settings.token_label))
    delays = []
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, "-m", "tests.kms.kill_switch_probe", "k"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY"
            time.sleep(0.3)  # let the other process settle into its loop with a warm cache
            rt.keys.revoke("k", "incident drill", cli_actor())
            returned = time.time()
            line = proc.stdout.readline().split()
            assert line and line[0] == "REFUSED", line
            delays.append(max(0.0, float(line[1]) - returned))
        finally:
            proc.wait(timeout=30)
        rt.keys.enable("k", cli_actor())
    kind = db_url.split(":")[0].split("+")[0]
    print(f"cross-process refusal on {kind}: "
          + ", ".join(f"{d * 1000:.1f} ms" for d in delays))
    assert max(delays) < BOUND_S
