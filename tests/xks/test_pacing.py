"""kms/xks/pacing.py: a flooding source's refusals are spaced, per source, and bounded;
the per-source failure budget (kms/xks/handler.py) that decides who is flooding."""

from __future__ import annotations

import time

import pytest

from kms.xks.handler import FailureBudget
from kms.xks.pacing import RefusalPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_refusals_from_one_source_are_spaced_at_the_rate() -> None:
    clock = Clock()
    pacer = RefusalPacer(rate=100.0, max_delay=2.0, clock=clock)
    delays = [pacer.delay("10.0.0.9") for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04])


def test_sources_are_paced_independently() -> None:
    clock = Clock()
    pacer = RefusalPacer(rate=10.0, clock=clock)
    for _ in range(10):
        pacer.delay("attacker")
    assert pacer.delay("attacker") == pytest.approx(1.0)
    assert pacer.delay("someone-else") == 0.0


def test_a_source_that_stops_is_not_held_later() -> None:
    clock = Clock()
    pacer = RefusalPacer(rate=10.0, clock=clock)
    for _ in range(10):
        pacer.delay("s")
    clock.now += 5.0  # the backlog (1 s of slots) has long passed
    assert pacer.delay("s") == 0.0
    assert pacer.delay("s") == pytest.approx(0.1)


def test_no_answer_is_held_longer_than_max_delay() -> None:
    clock = Clock()
    pacer = RefusalPacer(rate=10.0, max_delay=0.5, clock=clock)
    delays = [pacer.delay("s") for _ in range(50)]
    assert max(delays) == 0.5
    assert delays[:6] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


def test_the_table_of_sources_is_bounded() -> None:
    clock = Clock()
    pacer = RefusalPacer(rate=1.0, max_sources=3, clock=clock)
    for source in ("a", "b", "c", "d"):
        pacer.delay(source)
    pacer.delay("b")  # b was refused again: now the most recent
    pacer.delay("e")  # evicts c, the least recently refused
    assert pacer.delay("a") == 0.0  # a was evicted first: it starts afresh
    assert pacer.delay("b") == pytest.approx(2.0)  # b kept its backlog


def test_budget_admits_burst_then_rate_and_carries_the_suppressed_count() -> None:
    budget = FailureBudget(rate=1000.0, burst=2)
    assert [budget.admit("s")[0] for _ in range(4)] == [True, True, False, False]
    assert budget.admit("other") == (True, 0)  # per source
    time.sleep(0.01)  # refilled
    assert budget.admit("s") == (True, 2)  # the two suppressed ride on the next one
    assert budget.admit("s") == (True, 0)
