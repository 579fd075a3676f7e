"""A probe of the disk's sync latency while a test runs: a thread appends 512 bytes to a
file and fsyncs it every 5 ms, and keeps every sync that took longer than STALL_S.

Why: every XKS answer waits for its audit record's commit (synchronous=FULL), so a disk
that stalls a sync for 200-500 ms holds every answer in flight for that long, whatever the
HSM does. This VM's disk does (seen 159-272 ms syncs from a plain `fsync` loop beside the
HSM fault tests, 2026-11-28, each at the same millisecond as that test's slowest
answers). A test of HSM faults tells the two apart with it: an answer over budget is the
disk's only if a measured stall covers the time it is over.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import TracebackType

STALL_S = 0.02


class DiskProbe:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "disk-probe.dat"
        self.stalls: list[tuple[float, float]] = []  # (wall-clock start, end) of slow syncs
        self.syncs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk-probe", daemon=True)

    def __enter__(self) -> DiskProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while not self._stop.wait(0.005):
                os.write(fd, b"x" * 512)
                start, t0 = time.time(), time.monotonic()
                os.fsync(fd)
                took = time.monotonic() - t0
                self.syncs += 1
                if took > STALL_S:
                    self.stalls.append((start, start + took))
        finally:
            os.close(fd)

    def longest(self) -> float:
        return max((end - start for start, end in self.stalls), default=0.0)

    def covers(self, start: float, end: float, at_least: float) -> bool:
        """Whether one measured stall overlaps [start, end] by ``at_least`` seconds."""
        return any(min(end, e) - max(start, s) >= at_least for s, e in self.stalls)
