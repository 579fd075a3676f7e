"""A bad-signature flood in its own process (so it does not share the test's GIL): sends
``count`` copies of one request over ``connections`` keep-alive connections, reading every
answer, and prints a JSON summary of the status codes.

    python -m tests.reliability.flood HOST PORT COUNT CONNECTIONS < request-bytes
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

SOURCE = "127.0.0.2"  # not the valid clients' address: the server budgets per source


async def one_connection(host: str, port: int, request: bytes, count: int,
                         statuses: Counter[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(SOURCE, 0))
    sent = 0
    while sent < count:
        writer.write(request)
        sent += 1
        line = await reader.readline()
        if not line:  # closed by the server: reconnect
            writer.close()
            statuses[0] += 1
            reader, writer = await asyncio.open_connection(host, port, local_addr=(SOURCE, 0))
            continue
        status = int(line.split()[1])
        length = 0
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b""):
                break
            if header.lower().startswith(b"content-length:"):
                length = int(header.split(b":")[1])
        await reader.readexactly(length)
        statuses[status] += 1
    writer.close()


async def main(host: str, port: int, count: int, connections: int, request: bytes) -> None:
    statuses: Counter[int] = Counter()
    start = time.monotonic()
    share = [count // connections + (1 if i < count % connections else 0)
             for i in range(connections)]
    await asyncio.gather(*(one_connection(host, port, request, n, statuses) for n in share))
    print(json.dumps({"seconds": time.monotonic() - start,
                      "statuses": {str(k): v for k, v in statuses.items()}}))


if __name__ == "__main__":
    host, port, count, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    asyncio.run(main(host, port, count, conns, sys.stdin.buffer.read()))
