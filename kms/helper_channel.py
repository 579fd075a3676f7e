"""The event loop's end of a helper process that ``kms serve`` starts: the audit writer
process (kms/audit/writer_process.py) and the HSM worker process (kms/hsmproc/).

What both share lives here: starting the child with its end of a private socket pair
(secrets it must not have withheld from its environment; its configuration sent as the
first message, never in argv), at most once per RESPAWN_INTERVAL_S, or adopting the one
:func:`prespawn` started before the server's own imports (``kms serve``); writing messages
(kms/framing.py) without blocking the loop; reading its answers as one more readable
socket; the ready handshake (the child's first message is ``["ready"]``); and forgetting a
child that died or broke the protocol. What a message means, and what becomes of the
requests a lost child held, is the subclass's (``_answer``, ``_forget_pending``).
Every method runs on ``loop``'s thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import time

from kms.errors import DependencyTimeoutError
from kms.framing import READY, frame, frames, reap_later, spawn

RESPAWN_INTERVAL_S = 1.0
# Least privilege: neither helper gets the HSM PIN or the database URL (with its password)
# in its environment; the one that needs either receives it over the socket.
SECRET_ENV = frozenset({"KMS_PKCS11_PIN", "KMS_PKCS11_PIN_FILE", "KMS_DATABASE_URL"})
_log = logging.getLogger("kms.serve")


class HelperChannel:
    module = ""  # the child's ``python -m`` module
    what = "the helper process"  # in error messages and logs
    withheld: frozenset[str] = SECRET_ENV  # environment variables the child must not see
    respawn_interval_s = RESPAWN_INTERVAL_S

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_spawn = float("-inf")
        self._out = bytearray()  # not yet accepted by the socket
        self._in = bytearray()
        self._closed = False
        self._ready = asyncio.Event()  # set once the current child has said it is ready

    # -- subclass hooks ----------------------------------------------------------------

    def _config(self) -> bytes:
        """The child's first message."""
        raise NotImplementedError

    def _answer(self, message: bytes) -> bool:
        """One message after the handshake; False once the channel is broken."""
        raise NotImplementedError

    def _forget_pending(self, why: str) -> None:
        """The child is gone: what it held fails (or falls back) with ``why``."""
        raise NotImplementedError

    def _refused_handshake(self, message: bytes) -> str:
        return f"{self.what} answered out of protocol"

    # -- state -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def ready(self) -> bool:
        """The current child has started and reads messages."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        """Whether the child is ready, waiting up to ``timeout`` seconds for it (messages
        sent before then are not lost: the child reads them once it is)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- the child ---------------------------------------------------------------------

    def _start(self) -> None:
        """Start the child (or adopt the one :func:`prespawn` started for this module);
        DependencyTimeoutError if closed, too soon after the last start, or it cannot be
        started."""
        if self._closed:
            raise DependencyTimeoutError(f"{self.what} is closed")
        now = time.monotonic()
        if now - self._last_spawn < self.respawn_interval_s:
            raise DependencyTimeoutError(f"{self.what} is restarting")
        self._last_spawn = now
        spawned = _adopt(self.module, self.withheld) or _spawn(self.module, self.withheld)
        if spawned is None:
            _log.warning("%s could not start", self.what)
            raise DependencyTimeoutError(f"{self.what} could not start")
        ours, proc = spawned
        try:
            ours.sendall(frame(self._config()))  # a fresh socket: room for it
        except OSError:
            ours.close()
            reap_later(proc, f"{self.module}-reaper")
            raise DependencyTimeoutError(f"{self.what} could not start") from None
        ours.setblocking(False)
        self._sock, self._proc = ours, proc
        self._ready.clear()
        self.loop.add_reader(ours.fileno(), self._on_readable)

    def _send(self, payload: bytes) -> bool:
        """Queue one message for the child; False if the channel broke doing so."""
        sock = self._sock
        if sock is None:
            return False
        message = frame(payload)
        if self._out:
            self._out += message
            return True
        try:
            sent = sock.send(message)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._broken(f"{self.what} stopped")
            return False
        if sent < len(message):
            self._out += message[sent:]
            self.loop.add_writer(sock.fileno(), self._on_writable)
        return True

    def _on_writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._out)
        except BlockingIOError:
            return
        except OSError:
            self._broken(f"{self.what} stopped")
            return
        del self._out[:sent]
        if not self._out:
            self.loop.remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._broken(f"{self.what} stopped")
            return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        self._in += data
        for message in frames(self._in):
            if not self._take(message):
                return

    def _take(self, message: bytes) -> bool:
        """One message from the child; False once the channel is broken. A new child's
        first message must be ``["ready"]``; every later one goes to ``_answer``."""
        if self._ready.is_set():
            return self._answer(message)
        if message != READY:
            self._broken(self._refused_handshake(message))
            return False
        self._ready.set()
        return True

    def _detach(self) -> tuple[socket.socket, subprocess.Popen[bytes]] | None:
        """Take the child off the loop (its socket still open); None if there is none."""
        sock, proc = self._sock, self._proc
        self._sock = self._proc = None
        self._ready.clear()
        if sock is None or proc is None:
            return None
        self.loop.remove_reader(sock.fileno())
        if self._out:
            self.loop.remove_writer(sock.fileno())
        return sock, proc

    def _broken(self, why: str) -> None:
        """Forget the child (killed and reaped off the loop): what it held is given up;
        the next use starts a new one."""
        detached = self._detach()
        if detached is not None:
            sock, proc = detached
            sock.close()
            reap_later(proc, f"{self.module}-reaper")
        self._out.clear()
        self._in.clear()
        self._forget_pending(why)


# -- starting children -------------------------------------------------------------------

_Spawned = tuple[socket.socket, "subprocess.Popen[bytes]"]
# Children started ahead of their channel (prespawn), by module, with what they withhold.
_prespawned: dict[str, tuple[_Spawned, frozenset[str]]] = {}


def _spawn(module: str, withheld: frozenset[str]) -> _Spawned | None:
    """``module``'s child (kms.framing.spawn), without ``withheld`` in its environment."""
    return spawn(module, {k: v for k, v in os.environ.items() if k not in withheld})


def prespawn(module: str, withheld: frozenset[str] = SECRET_ENV) -> None:
    """Start ``module``'s child now, for the first channel of that module to adopt: its
    interpreter start and imports (0.3-0.5 s) then overlap the parent's own start instead
    of following it (``kms serve``). The child waits for its configuration, which only the
    adopting channel sends; one never adopted reads end-of-file when this process exits,
    and exits."""
    if module not in _prespawned:
        spawned = _spawn(module, withheld)
        if spawned is not None:
            _prespawned[module] = (spawned, withheld)


def _adopt(module: str, withheld: frozenset[str]) -> _Spawned | None:
    """The prespawned child of ``module``, if it is alive and was started withholding at
    least ``withheld``; else None (and a stale one is dropped)."""
    entry = _prespawned.pop(module, None)
    if entry is None:
        return None
    (sock, proc), its_withheld = entry
    if proc.poll() is None and withheld <= its_withheld:
        return sock, proc
    sock.close()
    reap_later(proc, f"{module}-reaper")
    return None
