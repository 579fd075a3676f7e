"""Calling the HSM from asyncio code without blocking the event loop.

Each HSM call may wait for the module lock and then for the token, so an ``async def``
handler must never call an :class:`~hsm.interface.Hsm` method directly. ``AsyncHsm`` runs
every call on a small dedicated thread pool (separate from the loop's default executor, so
a slow HSM cannot starve unrelated ``to_thread`` work) and awaits the result::

    ahsm = AsyncHsm(hsm)
    ct = await ahsm.call(hsm.encrypt, label, plaintext, aad)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from hsm.interface import Hsm

P = ParamSpec("P")
T = TypeVar("T")


class AsyncHsm:
    """Runs blocking HSM calls on ``workers`` threads (the calls are serialized anyway)."""

    def __init__(self, hsm: Hsm, workers: int = 4) -> None:
        self.hsm = hsm
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hsm")

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
