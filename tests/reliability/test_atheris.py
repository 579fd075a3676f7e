"""Issue 9 item 4, coverage-guided: each target of tests/reliability/atheris_targets.py
(envelope blobs, XKS bodies, SigV4 header blocks, signed notes and checkpoints, audit
record lines) fuzzed by libFuzzer from valid seeds, in its own process with a memory cap
(1 GiB of peak RSS, checked by the harness):
no exception but the documented refusal, no property broken, memory under the cap.

The record-line target found that the verifier's fast paths let schema-invalid records
through (tests/audit/test_verify_schema.py); run against that code, it fails within a
hundred inputs. ``ATHERIS_SEED`` picks another libFuzzer seed (default 1, so a CI run is
repeatable); ``ATHERIS_RUNS`` more inputs per target."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

from tests.reliability.atheris_targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("ATHERIS_RUNS", "200000"))
SEED = os.environ.get("ATHERIS_SEED", "1")


def _fuzz(target: str, tmp_path: Path, runs: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.reliability.atheris_targets", target,
         f"-runs={runs}", "-max_total_time=15", "-max_len=4096",
         f"-seed={SEED}", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "ATHERIS_CORPUS_DIR": str(tmp_path / "corpus"), **env})


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_finds_nothing(target: str, tmp_path: Path) -> None:
    done = _fuzz(target, tmp_path, RUNS)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Done " in done.stderr, done.stderr[-2000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("oom-*"))


def test_a_refusal_let_through_is_reported_as_a_crash(tmp_path: Path) -> None:
    """The harness can fail: with the blob target's documented refusal not caught, the
    first seed that is refused (a changed blob) crashes it."""
    done = _fuzz("blob", tmp_path, 10_000, ATHERIS_SABOTAGE="1")
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Uncaught Python exception" in out, out[-2000:]
    assert "InvalidCiphertextError" in out
    assert list(tmp_path.glob("crash-*"))


def test_the_memory_cap_is_enforced(tmp_path: Path) -> None:
    """The cap can fail a run: at 1 MB, the first check (after 2,000 inputs) is over it."""
    done = _fuzz("xks-body", tmp_path, 10_000, ATHERIS_RSS_LIMIT_MB="1")
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "MemoryError: peak RSS" in out and "over the cap of 1 MB" in out, out[-2000:]
