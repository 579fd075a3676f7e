"""A second process that finds the runs of canonical lines in the verifier's read blocks.

The pattern scan (kms/audit/canonical_lines.py) is about half of the verifier's time per
record, and Python's ``re`` holds the GIL while it runs: a thread cannot take it off the
main thread, a process can. The verifier (kms/audit/verify.py) hands each block it has
read to this process and, while the process scans it, hashes and chains the block before;
it checks nothing less: every block the process scans is exactly the bytes the verifier
read (sent over a private socket pair, never re-read from disk), and its answer becomes
the same ``Run`` objects that ``canonical_runs`` gives in-process.

The process is only an accelerator. Until it has said it is ready, and for good once it
has failed in any way (it could not start, it died, it answered out of protocol, with
what cannot be the block's runs, or not within ``RESULT_TIMEOUT_S``), the verifier scans
its blocks itself; the report is the same either way (tests/audit/test_verify_blocks.py).

Protocol (kms/framing.py: started with ``spawn``, so with ``python -P``; its first message
``READY``): for each block (newline-terminated lines), one answer: a JSON list of its
runs, ``[first, stop, prevs, seqs]`` (``seqs`` joined with commas). The child gets no
environment but ``PYTHONPATH`` (the parent's ``kms`` package), so no secret of the
parent's reaches it.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Final

from kms.audit.canonical_lines import Run, canonical_runs
from kms.framing import HEADER, READY, frame, read_frame, reap_later, spawn

__all__ = ["RESULT_TIMEOUT_S", "ScanProcess", "main"]

#: How long one block's answer may take (a 4 MiB block takes tens of milliseconds).
RESULT_TIMEOUT_S: Final = 30.0
_MAX_ANSWER: Final = 1 << 26


class ScanProcess:
    """The verifier's end: :meth:`submit` a block, take its :meth:`result`, and only then
    submit the next. The process reads a whole block before it scans it and answers before
    it reads the next, so neither side ever waits on a full socket while the other does
    too. Every method returns instead of raising; ``None`` or ``False`` means "scan it
    yourself"."""

    def __init__(self) -> None:
        self.blocks = 0  # blocks the process has scanned
        self._pending = 0
        self._ready = False
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        spawned = spawn("kms.audit.scan_process",
                        {"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        if spawned is not None:
            self._sock, self._proc = spawned
            self._sock.settimeout(RESULT_TIMEOUT_S)

    @property
    def alive(self) -> bool:
        return self._sock is not None

    def wait_ready(self, timeout: float = RESULT_TIMEOUT_S) -> bool:
        """Wait up to ``timeout`` seconds for the process to have started."""
        return self._check_ready(timeout)

    def _check_ready(self, timeout: float) -> bool:
        sock = self._sock
        if self._ready or sock is None:
            return self._ready
        try:
            readable, _, _ = select.select([sock], [], [], timeout)
        except (OSError, ValueError):
            readable = []
        if readable:
            if self._recv() == READY:
                self._ready = True
            else:
                self.close()
        return self._ready

    def submit(self, buf: bytes, end: int) -> bool:
        """Hand ``buf[:end]`` (newline-terminated lines) to the process; False if it is
        not ready yet or has failed (the caller scans that block itself)."""
        sock = self._sock
        assert self._pending == 0, "submit() before the last block's result()"
        if sock is None or not self._check_ready(0):
            return False
        try:
            sock.sendall(HEADER.pack(end))
            sock.sendall(memoryview(buf)[:end])
        except OSError:
            self.close()
            return False
        self._pending += 1
        return True

    def result(self, line_count: int) -> list[Run] | None:
        """The runs of the block submitted last (of ``line_count`` lines); None if the
        process failed or answered what cannot be that block's runs (the caller scans
        that block itself)."""
        assert self._pending == 1, "result() without a submitted block"
        self._pending = 0
        answer = self._recv()
        runs = None if answer is None else _runs(answer, line_count)
        if runs is None:
            self.close()
            return None
        self.blocks += 1
        return runs

    def _recv(self) -> bytes | None:
        return None if self._sock is None else read_frame(self._sock, _MAX_ANSWER)

    def close(self) -> None:
        """Stop the process (it reads end-of-file, or is killed if it is stuck)."""
        sock, proc = self._sock, self._proc
        self._sock = self._proc = None
        if sock is not None:
            sock.close()
        if proc is not None:
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                reap_later(proc, "scan-process-reaper")


def _runs(answer: bytes, line_count: int) -> list[Run] | None:
    """The runs in an answer, or None if it is not a list of runs, in order, that do not
    overlap and lie within the block, each with one prev and one seq per line."""
    try:
        items = json.loads(answer)
        runs: list[Run] = []
        end = 0
        for first, stop, prevs, seqs in items:
            if not (type(first) is int and type(stop) is int and end <= first < stop <= line_count
                    and type(prevs) is str and len(prevs) == 64 * (stop - first)
                    and type(seqs) is str and seqs.count(",") == stop - first - 1
                    and seqs.replace(",", "").isdecimal() and seqs.isascii()):
                return None
            runs.append(Run(first, stop, prevs, seqs.split(",")))
            end = stop
    except (ValueError, TypeError):
        return None
    return runs


# -- the child ---------------------------------------------------------------------------


def _answer(block: bytes) -> bytes:
    lines = block.split(b"\n")
    lines.pop()  # the block ends with a newline
    runs = canonical_runs(block, len(block), lines)
    return json.dumps([[r.first, r.stop, r.prevs, ",".join(r.seqs)] for r in runs],
                      separators=(",", ":")).encode("ascii")


def main(argv: list[str]) -> int:
    """``python -m kms.audit.scan_process FD``: scan the blocks the parent sends on FD."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the parent
    sock = socket.socket(fileno=int(argv[0]))
    try:
        sock.sendall(frame(READY))
        while (block := read_frame(sock)) is not None:
            sock.sendall(frame(_answer(block)))
    except OSError:  # the parent went away
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
