"""A live KMS over real HTTP: uvicorn on 127.0.0.1 (ephemeral port) in a thread, serving
``create_app(runtime)`` on a real SoftHSM token and SQLite, with every log line captured.

Tokens of every kind are planted: admin, auditor, expired, revoked, and a wrong one.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest

from kms.app import create_app
from kms.audit.event import cli_actor
from kms.logging import configure_logging
from kms.runtime import Runtime
from kms.tokens import Role, TokenService
from tests.kms.conftest import RuntimeFactory, make_runtime, sqlite_url  # noqa: F401
from tests.server import uvicorn_in_thread


class LogCapture(io.TextIOBase):
    """A thread-safe text stream that keeps everything written to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[str] = []

    def write(self, s: str) -> int:
        with self._lock:
            self._parts.append(s)
        return len(s)

    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)


@dataclass
class Live:
    base_url: str
    runtime: Runtime
    logs: LogCapture
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        h = dict(headers)
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base_url, headers=h, timeout=30)

    def request(self, method: str, path: str, token: str | None = None,
                json: Any = None, **headers: str) -> httpx.Response:
        with self.client(token, **headers) as c:
            return c.request(method, path, json=json)


def plant_tokens(rt: Runtime) -> dict[str, str]:
    service = TokenService(rt.engine, rt.audit, rt.clock)
    _, admin = service.create("test-admin", Role.ADMIN, cli_actor())
    _, auditor = service.create("test-auditor", Role.AUDITOR, cli_actor(), expires_in_days=30)
    past = TokenService(rt.engine, rt.audit, lambda: rt.clock() - timedelta(days=3))
    _, expired = past.create("test-expired", Role.ADMIN, cli_actor(), expires_in_days=1)
    _, revoked = service.create("test-revoked", Role.ADMIN, cli_actor())
    service.revoke("test-revoked", cli_actor())
    wrong = "kmsat_" + "A" * 43
    return {"admin": admin, "auditor": auditor, "expired": expired, "revoked": revoked,
            "wrong": wrong}


def serve(rt: Runtime, logs: LogCapture) -> Iterator[str]:
    configure_logging(stream=logs, level="INFO")
    with uvicorn_in_thread(create_app(rt, background=False)) as base:
        yield base


@pytest.fixture()
def live(make_runtime: RuntimeFactory, sqlite_url: str) -> Iterator[Live]:  # noqa: F811
    rt = make_runtime(sqlite_url, short_deletion=True)
    tokens = plant_tokens(rt)
    rt.audit.checkpoint()
    logs = LogCapture()
    for base in serve(rt, logs):
        yield Live(base, rt, logs, tokens)
