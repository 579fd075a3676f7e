"""Run XKS load across a fault: inject, hold, heal; return every answer and the times."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.reliability.harness import Answer, Load, kinds, seeds, wait_until
from tests.server import KmsServer


@dataclass
class FaultRun:
    answers: list[Answer]
    fault_at: float
    healed_at: float
    resumed_after: float

    def during(self) -> list[Answer]:
        return [a for a in self.answers if self.fault_at + 0.05 <= a.started < self.healed_at]

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if not a.ok]

    def settled(self) -> list[Answer]:
        """Answers to requests sent well after service resumed."""
        return [a for a in self.answers
                if a.started > self.healed_at + self.resumed_after + 0.5]

    def max_failure_ms(self) -> float:
        return max((a.latency for a in self.failures()), default=0.0) * 1000

    def summary(self, name: str) -> str:
        return (f"{name}: requests={len(self.answers)} all={dict(kinds(self.answers))} "
                f"during fault={dict(kinds(self.during()))} max failure latency="
                f"{self.max_failure_ms():.1f} ms, resumed {self.resumed_after:.2f} s after heal")


def run_across_fault(srv: KmsServer, akid: str, secret: str, key: str,
                     inject: Callable[[], None], heal: Callable[[], None], *,
                     hold_s: float = 2.0, during_fault: Callable[[], None] | None = None,
                     threads: int = 4) -> FaultRun:
    load = Load(srv.xks_endpoint, akid, secret, key, threads=threads, decrypt_share=0.5,
                seeds=seeds(srv, akid, secret, key), timeout=5.0).start()
    try:
        wait_until(lambda: sum(a.ok for a in load.snapshot()) >= 100, 20)
        fault_at = time.monotonic()
        inject()
        try:
            if during_fault is not None:
                during_fault()
            time.sleep(max(0.0, hold_s - (time.monotonic() - fault_at)))
        finally:
            healed_at = time.monotonic()
            heal()
        try:
            resumed_after = wait_until(
                lambda: sum(a.ok and a.started > healed_at for a in load.snapshot()) >= 20, 10)
        except AssertionError:
            after = [a for a in load.snapshot() if a.started > healed_at]
            raise AssertionError(f"not resumed 10 s after the heal: {dict(kinds(after))}\n"
                                 + srv.log()[-2000:]) from None
        time.sleep(1.0)
    finally:
        answers = load.stop()
    return FaultRun(answers, fault_at, healed_at, resumed_after)
