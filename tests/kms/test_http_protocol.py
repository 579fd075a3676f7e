"""CorkedTransport (kms/http_protocol.py): the writes of one loop step leave as one write,
in order; a close flushes first; everything else reaches the real transport. (Every test
that talks HTTP to ``kms serve`` runs through it too.)"""

from __future__ import annotations

import asyncio
from typing import Any

from kms.http_protocol import CorkedTransport


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.extra = {"peername": ("127.0.0.1", 1)}

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


def test_writes_of_one_step_are_joined_in_order() -> None:
    async def main() -> list[bytes]:
        real = Recorder()
        corked = CorkedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
        corked.write(bytearray(b"{}"))
        assert real.writes == []  # nothing left yet: the step is not over
        await asyncio.sleep(0)
        corked.write(b"next")
        corked.writelines([b"-a", b"-b"])
        await asyncio.sleep(0)
        assert corked.get_extra_info("peername") == ("127.0.0.1", 1)  # passed through
        return real.writes

    assert asyncio.run(main()) == [b"HTTP/1.1 200 OK\r\n\r\n{}", b"next-a-b"]


def test_close_flushes_before_closing() -> None:
    async def main() -> Recorder:
        real = Recorder()
        corked = CorkedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        corked.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        corked.close()
        await asyncio.sleep(0)  # the scheduled flush finds nothing left
        return real

    real = asyncio.run(main())
    assert real.writes == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"] and real.closed
