"""The event loop's end of the HSM worker process (``kms serve``, ``KMS_HSM_WORKER``).

Why: an XKS encrypt or decrypt spent about a quarter of the event loop's time per request
in SoftHSM's call (``python -m kms.bench.micro edge``; docs/benchmarks.md). Here the loop
collects the calls of one iteration into one batch, writes it to a socket and goes on
serving; the worker process makes the calls with its own session on the token and answers
the batch, which the loop reads as one more readable socket.

The worker only ever speeds a call up; it never decides one the server would decide
differently. Its answer is taken when it is a result or InvalidCiphertext (what a client
can cause). For anything else, or when the worker is not ready, has died, or has not
answered within :data:`ANSWER_WAIT_S`, :meth:`HsmWorker.call` gives :data:`FALLBACK` and
the caller makes the call with the server's own session, as without a worker (with its
fault handling and its 250 ms budget: tests/reliability/test_hsm_faults.py). While a batch
is overdue, calls go that way at once; a worker that stays silent for
:data:`STALL_KILL_S`, or breaks the protocol, is killed and replaced (at most once per
:attr:`respawn_interval_s`; kms/helper_channel.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import subprocess
import time
from dataclasses import dataclass

from hsm import HsmError, InvalidCiphertext, Pin
from hsm.calls import GcmCall, GcmEncrypt, GcmResult
from kms.errors import DependencyTimeoutError
from kms.framing import STOP_TIMEOUT_S
from kms.helper_channel import HelperChannel
from kms.hsmproc.codec import FAILED, CodecError, decode_results, encode_calls
from kms.metrics import observe_hsm_call

ANSWER_WAIT_S = 0.05  # then the server makes the call itself: within AWS's 250 ms
STALL_KILL_S = 2.0
MAX_UNSENT = 16 << 20
_log = logging.getLogger("kms.hsmproc")


class Fallback:
    def __repr__(self) -> str:
        return "FALLBACK"


FALLBACK = Fallback()  # make the call in the server instead
Outcome = GcmResult | InvalidCiphertext | Fallback


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker needs to open the token (sent over the socket, never argv/env)."""

    module: str
    token: str
    pin: Pin

    def payload(self) -> bytes:
        return json.dumps({"module": self.module, "token": self.token,
                           "pin": self.pin.reveal()}).encode()


@dataclass(eq=False)
class _Batch:
    calls: list[GcmCall]
    futures: list[asyncio.Future[Outcome]]
    sent: float
    timer: asyncio.TimerHandle | None = None
    overdue: bool = False


class HsmWorker(HelperChannel):
    """Every method runs on ``loop``'s thread (``close`` once the loop no longer serves)."""

    module = "kms.hsmproc.child"
    what = "the HSM worker process"
    # the PIN comes over the socket, never in the environment: HelperChannel.withheld

    def __init__(self, config: WorkerConfig, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._worker_config = config
        self._pending: collections.deque[_Batch] = collections.deque()
        self._calls: list[GcmCall] = []  # this loop iteration's batch, not yet sent
        self._futures: list[asyncio.Future[Outcome]] = []
        self._overdue = 0  # batches in _pending that were given up on
        self.answered = 0  # calls whose answer the worker gave
        self.fallbacks = 0  # calls the server made itself

    def _config(self) -> bytes:
        return self._worker_config.payload()

    def _refused_handshake(self, message: bytes) -> str:
        if message == FAILED:
            return "the HSM worker process could not open the token"
        return super()._refused_handshake(message)

    def start(self) -> None:
        """Start the worker process if it is not running (and may be started again)."""
        if self._sock is None:
            with contextlib.suppress(DependencyTimeoutError):  # calls fall back meanwhile
                self._start()

    # -- calls -------------------------------------------------------------------------

    def call(self, call: GcmCall) -> asyncio.Future[Outcome] | None:
        """A future for ``call``'s outcome, or None: make the call in the server (the
        worker is not ready, or has a batch overdue)."""
        if not self._ready.is_set() or self._overdue:
            if self._sock is None:
                self.start()
            elif self._pending and time.monotonic() - self._pending[0].sent > STALL_KILL_S:
                self._broken("the HSM worker process stalled")
            self.fallbacks += 1
            return None
        fut: asyncio.Future[Outcome] = self.loop.create_future()
        if not self._calls:
            self.loop.call_soon(self._flush)
        self._calls.append(call)
        self._futures.append(fut)
        return fut

    def _flush(self) -> None:
        calls, futures = self._calls, self._futures
        self._calls, self._futures = [], []
        sock = self._sock
        if sock is None or len(self._out) > MAX_UNSENT:
            self._give_up(futures)
            return
        batch = _Batch(calls, futures, time.monotonic())
        batch.timer = self.loop.call_later(ANSWER_WAIT_S, self._expire, batch)
        self._pending.append(batch)
        self._send(encode_calls(calls))  # a broken channel gives this batch up too

    def _give_up(self, futures: list[asyncio.Future[Outcome]]) -> None:
        for fut in futures:
            if not fut.done():
                self.fallbacks += 1
                fut.set_result(FALLBACK)

    def _expire(self, batch: _Batch) -> None:
        """``batch`` was not answered within ANSWER_WAIT_S: its callers make their calls
        themselves, and so does everyone until the worker has caught up."""
        batch.overdue = True
        self._overdue += 1
        self._give_up(batch.futures)

    def _answer(self, message: bytes) -> bool:
        if not self._pending:
            self._broken("the HSM worker process broke protocol")
            return False
        batch = self._pending.popleft()
        if batch.timer is not None:
            batch.timer.cancel()
        if batch.overdue:
            self._overdue -= 1
        try:
            results = decode_results(message, batch.calls)
        except CodecError:
            self._give_up(batch.futures)
            self._broken("the HSM worker process broke protocol")
            return False
        for call, fut, (result, seconds) in zip(batch.calls, batch.futures, results,
                                                strict=True):
            # every call the worker made is an HSM call, answered in time or not
            observe_hsm_call("encrypt" if isinstance(call, GcmEncrypt) else "decrypt",
                             "error" if isinstance(result, HsmError) else "ok", seconds)
            if fut.done():  # given up on (overdue): its caller made the call itself
                continue
            if isinstance(result, HsmError) and not isinstance(result, InvalidCiphertext):
                self.fallbacks += 1
                fut.set_result(FALLBACK)
            else:
                self.answered += 1
                fut.set_result(result)
        return True

    def _forget_pending(self, why: str) -> None:
        """The worker is gone: the server makes every call it held."""
        _log.warning("hsm_worker_replaced: %s", why)
        self._release()

    def _release(self) -> None:
        """Every call waiting for the worker, sent or not, falls back to the server."""
        pending, self._pending = self._pending, collections.deque()
        self._overdue = 0
        for batch in pending:
            if batch.timer is not None:
                batch.timer.cancel()
            self._give_up(batch.futures)
        futures, self._calls, self._futures = self._futures, [], []
        self._give_up(futures)

    def close(self) -> None:
        """End-of-file to the worker, which then exits; calls still waiting fall back."""
        self._closed = True
        detached = self._detach()
        if detached is not None:
            sock, proc = detached
            sock.close()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._release()
