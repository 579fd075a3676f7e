"""The state epoch sources on the event loop's fast path: a periodic re-read is claimed by
one request, a change signalled through the epoch file never is served stale."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kms.db.engine import WouldBlock, may_block, non_blocking
from kms.keys import state_cache
from kms.keys.state_cache import EpochFile, FileEpoch, PollingEpoch

INTERVAL = 0.1


class CountingRegistry:
    """Stands in for Registry.epoch(): a read that may not block on the loop."""

    def __init__(self) -> None:
        self.value = 7
        self.reads = 0
        self.lock = threading.Lock()

    def epoch(self) -> int:
        if not may_block():
            raise WouldBlock()
        with self.lock:
            self.reads += 1
        time.sleep(0.005)  # a read takes a while: lets concurrent callers pile up
        return self.value


def on_loop(source: FileEpoch | PollingEpoch) -> int | None:
    """``current()`` as the event loop's fast path calls it: None when it would block."""
    with non_blocking():
        try:
            return source.current()
        except WouldBlock:
            return None


def file_epoch(tmp_path: Path) -> tuple[CountingRegistry, EpochFile, FileEpoch]:
    reg = CountingRegistry()
    file = EpochFile(tmp_path / "epoch")
    file.touch()
    source = FileEpoch(reg, file, interval=INTERVAL)  # type: ignore[arg-type]
    assert source.current() == 7
    return reg, file, source


def test_a_due_periodic_reread_sends_one_loop_request_to_a_worker(tmp_path: Path) -> None:
    reg, _, source = file_epoch(tmp_path)
    time.sleep(INTERVAL * 1.5)
    answers = [on_loop(source) for _ in range(50)]
    assert answers[0] is None  # the claimant: its request reruns on a worker thread
    assert answers[1:] == [7] * 49  # the others keep the epoch they have meanwhile
    assert source.current() == 7  # the claimant, on its worker thread, reads
    assert reg.reads == 2
    assert on_loop(source) == 7


def test_past_the_grace_every_loop_request_reads_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_cache, "REFRESH_GRACE_S", 2 * INTERVAL)
    _, _, source = file_epoch(tmp_path)
    time.sleep(INTERVAL * 1.2)
    assert on_loop(source) is None
    assert on_loop(source) == 7
    time.sleep(INTERVAL * 3)  # the claimed read never happened (the database is away)
    assert [on_loop(source) for _ in range(5)] == [None] * 5


def test_a_changed_epoch_file_is_never_served_stale(tmp_path: Path) -> None:
    reg, file, source = file_epoch(tmp_path)
    time.sleep(INTERVAL * 1.5)
    assert on_loop(source) is None  # a periodic re-read is claimed and in flight
    reg.value = 8
    file.touch()  # another process revoked a key meanwhile
    assert [on_loop(source) for _ in range(5)] == [None] * 5
    assert source.current() == 8
    assert on_loop(source) == 8


def test_callers_that_saw_the_same_change_read_the_epoch_once(tmp_path: Path) -> None:
    reg, file, source = file_epoch(tmp_path)
    reg.value = 9
    file.touch()
    time.sleep(state_cache.STAT_REUSE_S * 2)
    barrier = threading.Barrier(8)
    seen: list[int] = []

    def caller() -> None:
        barrier.wait()
        seen.append(source.current())

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [9] * 8
    assert reg.reads == 2  # the first fill, then one read for the change


def test_polling_epoch_claims_its_periodic_reread_once() -> None:
    reg = CountingRegistry()
    source = PollingEpoch(reg, interval=INTERVAL)  # type: ignore[arg-type]
    assert source.current() == 7
    time.sleep(INTERVAL * 1.5)
    answers = [on_loop(source) for _ in range(20)]
    assert answers[0] is None
    assert answers[1:] == [7] * 19
    reg.value = 8
    assert source.current() == 8
    assert reg.reads == 2


def test_non_blocking_and_no_rebuild_restore_the_outer_state_also_after_errors() -> None:
    from hsm.pkcs11_hsm import _NO_REBUILD, no_rebuild

    assert may_block() and not _NO_REBUILD.get()
    with non_blocking(), no_rebuild():
        with non_blocking(), no_rebuild():  # nested: the inner exit keeps the outer state
            pass
        assert not may_block() and _NO_REBUILD.get()
    assert may_block() and not _NO_REBUILD.get()
    with pytest.raises(RuntimeError), non_blocking(), no_rebuild():
        raise RuntimeError("raised inside")
    assert may_block() and not _NO_REBUILD.get()
