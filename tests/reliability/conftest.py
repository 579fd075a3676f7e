"""Fixtures of the reliability suite: a served KMS with one key and one credential."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.server import KmsServer

KEY = "k"


@dataclass
class Served:
    srv: KmsServer
    akid: str
    secret: str
    key: str = KEY


def _served(extra_env: dict[str, str] | None = None) -> Iterator[Served]:
    srv = KmsServer(extra_env=extra_env)
    srv.cli("keys", "create", KEY)
    akid, secret = srv.add_credential()
    srv.start()
    yield Served(srv, akid, secret)
    srv.stop()


@pytest.fixture()
def served() -> Iterator[Served]:
    yield from _served()


@pytest.fixture()
def served_logged() -> Iterator[Served]:
    """A served key whose server logs every XKS answer (KMS_ACCESS_LOG=all), with the
    time it waited for its audit commit (``audit_wait_ms``)."""
    yield from _served({"KMS_ACCESS_LOG": "all"})
