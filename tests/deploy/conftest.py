"""The package-wide topology: two replicas on one PostgreSQL and one token directory."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from kms.client import XksClient
from tests.deploy.replicas import KMS, ROOT, LoadBalancer, Replica, SharedState
from tests.pg import PostgresServer

KEY = "shared-key"


@dataclass
class Cluster:
    shared: SharedState
    replicas: list[Replica]
    lb: LoadBalancer
    admin_token: str
    access_key_id: str
    secret: str

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.replicas[0].cli(*args, check=check)

    def xks(self, replica: Replica | None = None) -> XksClient:
        base = replica.url if replica is not None else self.lb.url
        return XksClient(f"{base}/{self.shared.uri_prefix}", self.access_key_id, self.secret,
                         timeout=2.0)

    def admin(self, replica: Replica, path: str, body: dict[str, str] | None = None
              ) -> httpx.Response:
        return httpx.post(f"{replica.url}/admin/v1{path}", json=body, timeout=5,
                          headers={"Authorization": f"Bearer {self.admin_token}"})


@pytest.fixture(scope="package")
def cluster(postgres: PostgresServer) -> Iterator[Cluster]:
    shared = SharedState(postgres.create_database())
    first = shared.replica("r1")
    first.cli("init")  # once, against the shared database and token (compose: kms-init)
    # `kms init` again, from two replicas at once, is a no-op that must not fail
    procs = [subprocess.Popen([KMS, "init"], env=shared.replica(f"init{i}").env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    first.cli("keys", "create", KEY)
    access_key_id, secret = first.add_credential()
    token = first.cli_json("tokens", "create", "ops", "--role", "admin")["token"]
    replicas = [first, shared.replica("r2")]
    lb: LoadBalancer | None = None
    try:
        for r in replicas:
            r.start()
        lb = LoadBalancer([("127.0.0.1", r.port) for r in replicas])
        yield Cluster(shared, replicas, lb, token, access_key_id, secret)
    finally:
        if lb is not None:
            lb.close()
        for r in replicas:
            r.stop()


