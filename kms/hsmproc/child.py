"""The HSM worker process: ``python -m kms.hsmproc.child FD``, started by
:class:`kms.hsmproc.channel.HsmWorker` with its end of a private socket pair.

It receives its configuration as the first frame (JSON: the PKCS#11 module, the token
label and the PIN, which therefore never appears in its argv or environment), opens its
own session on the token (one process, one thread: SoftHSM's rule of one caller at a time
holds by construction) and answers ``["ready"]``, or ``["failed"]`` and exits. Then it
reads every batch of calls that has arrived, makes them in order and answers each batch
(kms/hsmproc/codec.py). On end-of-file (the server closed its end, or died) it exits.
"""

from __future__ import annotations

import json
import logging
import random
import select
import signal
import socket
import sys
import time

from hsm import HsmError, HsmUnavailable, Pin
from hsm.calls import GcmResult
from hsm.pkcs11_hsm import Pkcs11Hsm
from kms.framing import READY, frame, frames
from kms.hsmproc.codec import FAILED, Answer, CodecError, decode_calls, encode_results

OPEN_ATTEMPTS = 6
_log = logging.getLogger("kms.hsmproc")


def _open(config: dict[str, str]) -> Pkcs11Hsm:
    """Retry briefly: processes opening one token directory at the same moment can make
    SoftHSM report NoSuchToken (shared/facts.md)."""
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return Pkcs11Hsm(config["module"], config["token"], Pin(config["pin"]),
                             pool_size=1, check_mechanisms=False)
        except HsmUnavailable:
            if attempt == OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.05 + random.random() * 0.2 * (attempt + 1))
    raise HsmUnavailable("unreachable")


def answer(hsm: Pkcs11Hsm, payload: bytes) -> bytes:
    """One batch's answer. A batch that cannot be read is answered with nothing (zero
    items), which the parent takes as a broken protocol."""
    try:
        calls = decode_calls(payload)
    except CodecError:
        return b""
    answers: list[Answer] = []
    for call in calls:
        started = time.perf_counter()
        outcome: GcmResult | HsmError
        try:
            outcome = call.run(hsm)
        except HsmError as exc:
            outcome = exc
        except Exception:  # never a dead worker for one bad call: the parent retries it
            outcome = HsmError("internal error")
        answers.append(Answer(outcome, time.perf_counter() - started))
    return encode_results(answers)


def serve(sock: socket.socket) -> int:
    buf = bytearray()
    while not (first := frames(buf)):
        data = sock.recv(1 << 16)
        if not data:
            return 0
        buf += data
    try:
        config = json.loads(first[0])
        hsm = _open(config)
    except (HsmError, ValueError, KeyError, TypeError) as exc:
        _log.warning("hsm worker could not open the token (%s)", type(exc).__name__)
        sock.sendall(frame(FAILED))
        return 1
    del config
    sock.sendall(frame(READY))
    pending = first[1:]
    try:
        while True:
            if not pending:
                data = sock.recv(1 << 20)
                if not data:
                    return 0
                buf += data
                pending = frames(buf)
                continue
            while select.select([sock], [], [], 0)[0]:  # everything that has arrived
                data = sock.recv(1 << 20)
                if not data:
                    break
                buf += data
                pending += frames(buf)
            replies = b"".join(frame(answer(hsm, p)) for p in pending)
            pending = []
            sock.sendall(replies)
    finally:
        hsm.close()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the parent
    from kms.logging import configure_logging

    configure_logging()
    sock = socket.socket(fileno=int(argv[0]))
    try:
        return serve(sock)
    except OSError:  # the parent went away
        return 0
    finally:
        sock.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
