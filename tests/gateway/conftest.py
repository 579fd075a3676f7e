"""Fixtures for the gateway's end-to-end tests: one real ``kms serve`` holding the tenants'
keys, a fake upstream, and one ``gateway serve`` with tenants A and B (set up by the CLI)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from gateway.db import make_engine
from gateway.master_key import MasterKey
from gateway.virtual_keys import VirtualKeyStore
from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import GatewayProcess
from tests.server import KmsServer


@dataclass
class World:
    kms: KmsServer
    upstream: FakeUpstream
    gateway: GatewayProcess
    provider_keys: dict[str, str]
    xks_secrets: list[str] = field(default_factory=list)

    def virtual_key(self, tenant: str, *, rpm: int | None = None,
                    models: list[str] | None = None) -> dict[str, str]:
        """Issue a key in-process (the CLI path is tested once; this keeps the suite fast)."""
        engine = make_engine(f"sqlite:///{self.gateway.db_path}")
        try:
            store = VirtualKeyStore(engine, MasterKey.load(self.gateway.home / "master.key"))
            key, secret = store.create(tenant, rpm=rpm, models=models)
        finally:
            engine.dispose()
        return {"id": key.id, "key": secret}


@pytest.fixture(scope="session")
def kms() -> Iterator[KmsServer]:
    srv = KmsServer(uri_prefix="cmk")
    srv.cli("keys", "create", "tenant-a")
    srv.cli("keys", "create", "tenant-b")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def world(kms: KmsServer, upstream: FakeUpstream) -> Iterator[World]:
    gw = GatewayProcess()
    secrets: list[str] = []
    keys = {}
    for tenant in ("a", "b"):
        akid, secret = kms.add_credential()
        secrets.append(secret)
        gw.cli("tenants", "create", tenant, "--xks-endpoint", kms.xks_endpoint,
               "--key-id", f"tenant-{tenant}", "--access-key-id", akid, "--check",
               stdin=secret + "\n")
        keys[tenant] = f"sk-{tenant}-planted-{uuid.uuid4().hex}"
    # A's first key is refused by the upstream (429): every A request exercises failover.
    gw.cli("provider-keys", "add", "a", "--provider", "openai", "--base-url",
           upstream.base_url, stdin=f"sk-a-fail-429-{uuid.uuid4().hex}\n")
    for tenant in ("a", "b"):
        gw.cli("provider-keys", "add", tenant, "--provider", "openai", "--base-url",
               upstream.base_url, stdin=keys[tenant] + "\n")
    gw.start()
    yield World(kms, upstream, gw, keys, secrets)
    gw.stop()
