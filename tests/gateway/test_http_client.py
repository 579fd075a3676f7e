"""The gateway's HTTP/1.1 client against a raw asyncio server: Content-Length, chunked and
close-delimited bodies, keep-alive reuse, a stale pooled connection, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.http_client import HttpClient, HttpError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def _run(handler: Handler, test: Callable[[str, HttpClient], Awaitable[None]],
         timeout: float = 5.0) -> None:
    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient(timeout=timeout)
        try:
            await test(f"http://127.0.0.1:{port}/v1/x?a=1", client)
        finally:
            await client.aclose()
            server.close()
    asyncio.run(main())


def test_content_length_chunked_and_keep_alive() -> None:
    connections: list[int] = []
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            try:
                head, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            heads.append(head)
            if b"chunked" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                             b"X-Request-Id: r1\r\n\r\n"
                             b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
            await writer.drain()
        writer.close()

    async def test(url: str, client: HttpClient) -> None:
        r = await client.request("POST", url, {"Authorization": "Bearer k"}, b'{"a": 1}')
        assert r.status_code == 201 and await r.aread() == b'{"a": 1}'
        await r.aclose()
        r = await client.request("GET", url.replace("x?a=1", "chunked"), {})
        assert r.headers["x-request-id"] == "r1"
        assert [c async for c in r.aiter_raw()] == [b"hello", b" world"]
        await r.aclose()
        assert len(connections) == 1  # the connection was reused
        assert heads[0].startswith(b"POST /v1/x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"Authorization: Bearer k" in heads[0]

    _run(handler, test)


def test_a_connection_closed_by_the_server_is_retried_once() -> None:
    served: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # but no "Connection: close": the client pools it

    async def test(url: str, client: HttpClient) -> None:
        for _ in range(3):
            r = await client.request("GET", url, {})
            assert await r.aread() == b"ok"
            await r.aclose()
            await asyncio.sleep(0.05)
        assert len(served) == 3

    _run(handler, test)


def test_close_delimited_body_unread_body_and_header_injection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    async def test(url: str, client: HttpClient) -> None:
        r = await client.request("GET", url, {})
        assert await r.aread() == b"until the end"
        await r.aclose()
        r = await client.request("GET", url, {})
        await r.aclose()  # not read: the connection is closed, not pooled
        with pytest.raises(HttpError):
            await client.request("GET", url, {"X-Evil": "a\r\nInjected: 1"})

    _run(handler, test)


def test_timeouts_and_unreachable() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(2)  # never answers in time

    async def test(url: str, client: HttpClient) -> None:
        with pytest.raises(HttpError):
            await client.request("GET", url, {})
        with pytest.raises(HttpError):
            await client.request("GET", "http://127.0.0.1:1/v1", {})

    _run(handler, test, timeout=0.2)
