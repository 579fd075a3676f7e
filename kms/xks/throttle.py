"""Per-store request quotas: a token bucket per key store in each process."""

from __future__ import annotations

import threading
import time

from kms.errors import ThrottlingError


class StoreThrottle:
    """``allow(store, rps)`` refuses once a store exceeds ``rps`` requests per second
    (bursts up to one second's worth). Each worker process enforces its own share."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # store -> (tokens, last time)

    def check(self, store: str, rps: int | None) -> None:
        if not rps:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(store, (float(rps), now))
            tokens = min(float(rps), tokens + (now - last) * rps)
            if tokens < 1.0:
                self._buckets[store] = (tokens, now)
                raise ThrottlingError("the key store's request quota is exceeded")
            self._buckets[store] = (tokens - 1.0, now)
