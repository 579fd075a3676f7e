"""A small HTTP/1.1 client for the calls to the LLM provider, on asyncio streams.

Why not httpx: profiled under the gateway benchmark (16 concurrent clients), httpx and
httpcore took about half of the gateway's CPU per request (its layers, anyio, and a
readability poll of every idle pooled connection at every request). The gateway needs
little of it: JSON requests to a few known base URLs, keep-alive, TLS, streamed bodies
(``Content-Length``, chunked, or until close) and timeouts.

- one pool of idle keep-alive connections per (scheme, host, port), last in first out;
  a connection is reused only when its response was read to the end, and a request that
  finds a reused connection closed by the server is retried once on a new one (nothing of
  the answer was received, so the server did not act on it);
- ``timeout`` bounds every read (so a stalled provider is given up), ``connect_timeout``
  the connection and TLS set-up;
- no ``Accept-Encoding`` is sent, so answers come uncompressed; no proxy from the
  environment (``HTTPS_PROXY``) is used.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

MAX_HEAD = 1 << 20
_READ = 1 << 16


class HttpError(Exception):
    """The provider could not be reached, or answered something that is not HTTP/1.1."""


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi  # what httpx used: the same trust store as before

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()


class _Connection:
    __slots__ = ("key", "reader", "reused", "writer")

    def __init__(self, key: tuple[str, str, int], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer
        self.reused = False

    def usable(self) -> bool:
        return not self.writer.transport.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.transport.abort()


class Response:
    """An answer whose body has not been read yet: read it with :meth:`aread` or
    :meth:`aiter_raw` (transfer-decoded), and always :meth:`aclose` it."""

    def __init__(self, client: HttpClient, conn: _Connection, status_code: int,
                 headers: dict[str, str], keep_alive: bool, no_body: bool) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self.status_code = status_code
        self.headers = headers
        self._keep_alive = keep_alive
        self._done = no_body
        self._consumed = False
        if no_body:
            self._release()

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        if self._consumed:
            raise RuntimeError("the body was read already")
        self._consumed = True
        if self._done or self._conn is None:
            return
        reader = self._conn.reader
        timeout = self._client.timeout
        try:
            if self.headers.get("transfer-encoding", "").lower().endswith("chunked"):
                while True:
                    async with asyncio.timeout(timeout):
                        line = await reader.readuntil(b"\r\n")
                    size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                    if size == 0:
                        async with asyncio.timeout(timeout):
                            while await reader.readuntil(b"\r\n") != b"\r\n":
                                pass  # trailers
                        break
                    async with asyncio.timeout(timeout):
                        data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif "content-length" in self.headers:
                remaining = int(self.headers["content-length"])
                while remaining > 0:
                    async with asyncio.timeout(timeout):
                        data = await reader.read(min(remaining, _READ))
                    if not data:
                        raise HttpError("the provider closed the connection mid-answer")
                    remaining -= len(data)
                    yield data
            else:  # delimited by the end of the connection
                self._keep_alive = False
                while True:
                    async with asyncio.timeout(timeout):
                        data = await reader.read(_READ)
                    if not data:
                        break
                    yield data
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            self._keep_alive = False
            self.close()
            raise HttpError(f"reading the answer failed ({type(exc).__name__})") from None
        self._done = True
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._keep_alive and self._done:
                self._client._put(conn)
            else:
                conn.close()

    def close(self) -> None:
        """Give the connection back (body read to the end) or close it (not read)."""
        self._release()

    async def aclose(self) -> None:
        self._release()


class HttpClient:
    def __init__(self, timeout: float = 60.0, connect_timeout: float = 5.0,
                 max_idle_per_host: int = 64) -> None:
        self.timeout = timeout
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle_per_host
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def request(self, method: str, url: str, headers: Mapping[str, str],
                      body: bytes | None = None) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError("the provider URL must be http(s)://host[:port]/path")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept: */*",
                 "User-Agent: cmk-gateway"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise HttpError("a header holds a line break")
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        for attempt in range(2):
            conn = self._get(key)
            if conn is None:
                conn = await self._connect(key)
            try:
                conn.writer.write(request)
                async with asyncio.timeout(self.timeout):
                    head = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                conn.close()
                if conn.reused and not exc.partial and attempt == 0:
                    continue  # the server had closed the idle connection: once more
                raise HttpError("the provider closed the connection") from None
            except (OSError, TimeoutError, asyncio.LimitOverrunError) as exc:
                conn.close()
                if conn.reused and isinstance(exc, ConnectionError) and attempt == 0:
                    continue
                raise HttpError(f"the provider could not be reached ({type(exc).__name__})"
                                ) from None
            except BaseException:  # cancelled: the connection's state is unknown
                conn.close()
                raise
            return self._response(conn, method, head)
        raise HttpError("the provider could not be reached")  # pragma: no cover

    def _response(self, conn: _Connection, method: str, head: bytes) -> Response:
        try:
            status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
            version, code = status_line.split(" ", 2)[:2]
            status = int(code)
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
        except ValueError:
            conn.close()
            raise HttpError("the provider's answer is not HTTP/1.1") from None
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        keep_alive = (version == "HTTP/1.1"
                      and "close" not in headers.get("connection", "").lower())
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        return Response(self, conn, status, headers, keep_alive, no_body)

    async def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        ctx = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = _ssl_context()
            ctx = self._ssl
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=ctx, server_hostname=host if ctx else None,
                    limit=MAX_HEAD)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise HttpError(f"the provider could not be reached ({type(exc).__name__})"
                            ) from None
        return _Connection(key, reader, writer)

    def _get(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable():
                conn.reused = True
                return conn
            conn.close()
        return None

    def _put(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < self._max_idle and conn.usable():
            idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
