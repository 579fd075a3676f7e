"""Length-prefixed messages between the server and a helper process it started (the audit
writer process, the HSM worker process), and reaping a helper that cannot be trusted.

Each message is a 4-byte big-endian length and a payload, over a socket pair private to
the two processes.
"""

from __future__ import annotations

import struct
import subprocess
import threading

HEADER = struct.Struct("!I")
STOP_TIMEOUT_S = 5.0


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
