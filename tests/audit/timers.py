"""Recording the audit log's timeout timers on the running loop (tests of _Deadline)."""

from __future__ import annotations

import asyncio
from typing import Any

import kms.audit.log as log_module


def record_append_timers(timers: list[asyncio.TimerHandle]) -> None:
    """From now on, every APPEND_TIMEOUT_S timer the running loop arms is appended to
    ``timers`` (the loop's ``call_later`` is wrapped; other timers pass through)."""
    loop = asyncio.get_running_loop()
    real = loop.call_later

    def recorded(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        handle = real(delay, callback, *args)
        if delay == log_module.APPEND_TIMEOUT_S:
            timers.append(handle)
        return handle

    loop.call_later = recorded  # type: ignore[method-assign]
