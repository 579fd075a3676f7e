"""Helper processes: starting one with its end of a private socket pair, the
length-prefixed messages over it, and reaping one that cannot be trusted. Used by kms
serve's audit writer and HSM worker processes (through kms/helper_channel.py) and by the
verifier's scan process (kms/audit/scan_process.py).

Each message is a 4-byte big-endian length and a payload, over a socket pair private to
the two processes. A child's first message is ``READY``.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading

HEADER = struct.Struct("!I")
STOP_TIMEOUT_S = 5.0
READY = b'["ready"]'


def spawn(module: str, env: dict[str, str]) -> tuple[socket.socket, subprocess.Popen[bytes]] | None:
    """``python -P -m module FD`` with its end of a new socket pair and environment
    ``env``; our end, or None if it cannot be started. ``-P``: the working directory is not
    on the child's import path (a module planted there, say in an export an auditor was
    handed or in the server's directory, could read what the child is sent: the PIN)."""
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", module, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, env=env)
    except OSError:
        ours.close()
        return None
    finally:
        theirs.close()
    return ours, proc


def frame(payload: bytes) -> bytes:
    """One message: its length, then the payload."""
    return HEADER.pack(len(payload)) + payload


def frames(buf: bytearray) -> list[bytes]:
    """Remove and return the complete messages at the start of ``buf``."""
    out: list[bytes] = []
    pos = 0
    while len(buf) - pos >= 4:
        (n,) = HEADER.unpack_from(buf, pos)
        if len(buf) - pos - 4 < n:
            break
        out.append(bytes(buf[pos + 4:pos + 4 + n]))
        pos += 4 + n
    del buf[:pos]
    return out


def read_frame(sock: socket.socket, limit: int = 1 << 32) -> bytes | None:
    """One message from a blocking socket (or one with a timeout); None at end-of-file, on
    an error or timeout, or if it is longer than ``limit``. A large message is received
    straight into its result (one copy), not through a buffer."""
    header = _recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    return _recv_exactly(sock, size) if size <= limit else None


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    parts: list[bytes] = []
    left = size
    try:
        while left:
            # One call on a blocking socket; with a timeout, recv returns what has come.
            part = sock.recv(left, socket.MSG_WAITALL)
            if not part:
                return None
            parts.append(part)
            left -= len(part)
    except OSError:  # includes the timeout
        return None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def reap_later(proc: subprocess.Popen[bytes], name: str) -> None:
    """Kill a helper process that cannot be trusted to answer, and reap it off the event
    loop (on a daemon thread called ``name``)."""
    def reap() -> None:
        try:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            pass

    threading.Thread(target=reap, name=name, daemon=True).start()
