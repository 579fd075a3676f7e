"""The disk probe's attribution rule (tests/reliability/disk_probe.py), on stalls given."""

from __future__ import annotations

import time
from pathlib import Path

from tests.reliability.disk_probe import DiskProbe


def test_an_answer_is_the_disk_s_only_where_a_stall_covers_its_excess(tmp_path: Path) -> None:
    probe = DiskProbe(tmp_path)
    probe.stalls = [(100.0, 100.27)]  # a 270 ms sync
    assert probe.covers(99.99, 100.28, 0.03)  # 290 ms answer: 40 ms over, inside the stall
    assert not probe.covers(101.0, 101.3, 0.05)  # after the stall
    assert not probe.covers(99.5, 100.05, 0.3)  # overlaps by 50 ms only, over by 300
    assert abs(probe.longest() - 0.27) < 1e-9


def test_the_probe_syncs_while_it_runs(tmp_path: Path) -> None:
    with DiskProbe(tmp_path) as probe:
        deadline = time.monotonic() + 10
        while probe.syncs < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert probe.syncs >= 3
    assert probe.path.stat().st_size == 512 * probe.syncs  # one append per sync
