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


@pytest.fixture()
def served() -> Iterator[Served]:
    srv = KmsServer()
    srv.cli("keys", "create", KEY)
    akid, secret = srv.add_credential()
    srv.start()
    yield Served(srv, akid, secret)
    srv.stop()
