"""The XKS client makes a call once more when its connection fails before any answer (a
kept-alive connection whose server, or the replica a load balancer pinned it to, is gone),
and never more than once; a timeout is not repeated. Against a raw TCP server on loopback
that plays each connection's part."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from kms.client import XksClient
from kms.errors import DependencyTimeoutError

HEALTH = json.dumps({"xksProxyFleetSize": 1, "xksProxyVendor": "test", "xksProxyModel": "t",
                     "ekmVendor": "test", "ekmFleetDetails": [
                         {"id": "h", "model": "m", "healthStatus": "ACTIVE"}]}).encode()


class Scripted:
    """Accepts connections; the n-th one reads a request and then does ``parts[n]``:
    "close" (no answer), "answer" (200 with HEALTH), "hang" (nothing, until closed)."""

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for part in self.parts:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head)
                if part == "answer":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                 % (len(HEALTH), HEALTH))
                elif part == "hang":
                    self._done.wait(10)

    def close(self) -> None:
        self._done.set()
        self.sock.close()


@pytest.fixture()
def scripted() -> Iterator[list[Scripted]]:
    made: list[Scripted] = []
    yield made
    for s in made:
        s.close()


def _client(server: Scripted, timeout: float = 2.0) -> XksClient:
    return XksClient(f"http://127.0.0.1:{server.port}/xks", "AKIDTEST", "secret",
                     timeout=timeout)


def test_a_connection_lost_before_the_answer_is_tried_once_more(
        scripted: list[Scripted]) -> None:
    server = Scripted(["close", "answer"])
    scripted.append(server)
    client = _client(server)
    try:
        assert client.health()["ekmFleetDetails"][0]["healthStatus"] == "ACTIVE"
    finally:
        client.close()
    assert len(server.requests) == 2
    assert all(b"Authorization: AWS4-HMAC-SHA256" in h for h in server.requests)


def test_twice_lost_is_unreachable(scripted: list[Scripted]) -> None:
    server = Scripted(["close", "close", "answer"])
    scripted.append(server)
    client = _client(server)
    try:
        with pytest.raises(DependencyTimeoutError, match="unreachable"):
            client.health()
    finally:
        client.close()
    assert len(server.requests) == 2  # not a third time


def test_a_timeout_is_not_repeated(scripted: list[Scripted]) -> None:
    server = Scripted(["hang", "answer"])
    scripted.append(server)
    client = _client(server, timeout=0.3)
    try:
        with pytest.raises(DependencyTimeoutError, match="in time"):
            client.health()
    finally:
        client.close()
    assert len(server.requests) == 1
