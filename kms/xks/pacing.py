"""Pacing of refused requests from a source that keeps failing authentication.

A source address that has spent its auth-failure audit budget (kms/xks/handler.py
``FailureBudget``) is flooding us with bad signatures. Its refusals are still answered, and
still answered 401, but each answer waits for the source's next slot: at most ``rate``
refusals per second per source, however many connections it opens, with no answer held
longer than ``max_delay``. The wait is a timer on the event loop, not work: a closed-loop
flooder spends its time waiting for answers instead of taking CPU from valid callers, who
are never delayed (a request that authenticates is not paced, from any source).

Event-loop only (no lock): the XKS edge calls it from its coroutine. Each worker process
(``kms serve --workers N``) keeps its own budgets and pace.
"""

from __future__ import annotations

import time
from collections.abc import Callable

REFUSALS_PER_SECOND = 100.0
MAX_DELAY_S = 2.0


class RefusalPacer:
    def __init__(self, rate: float = REFUSALS_PER_SECOND, max_delay: float = MAX_DELAY_S,
                 max_sources: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self.max_delay = max_delay
        self.max_sources = max_sources
        self.clock = clock
        self._next: dict[str, float] = {}  # source -> its next free answer slot

    def delay(self, source: str) -> float:
        """Seconds to hold this source's refusal; reserves its slot."""
        now = self.clock()
        slot = max(self._next.pop(source, now), now)
        self._next[source] = slot + self.interval
        while len(self._next) > self.max_sources:  # the least recently refused first
            del self._next[next(iter(self._next))]
        return min(slot - now, self.max_delay)
