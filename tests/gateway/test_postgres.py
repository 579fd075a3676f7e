"""The gateway on PostgreSQL: a request end to end, then a ``pg_dump`` of its database holds
no prompt, response or provider key in clear."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway.fake_upstream import FakeUpstream, answer_for
from tests.gateway.harness import GatewayProcess
from tests.pg import PostgresServer
from tests.server import KmsServer

pytestmark = pytest.mark.postgres


@pytest.fixture()
def pg_gateway(postgres: PostgresServer) -> Iterator[tuple[GatewayProcess, str]]:
    url = postgres.create_database()
    gw = GatewayProcess(database_url=url)
    yield gw, url
    gw.stop()


def test_pg_dump_holds_nothing_in_clear(pg_gateway: tuple[GatewayProcess, str],
                                        postgres: PostgresServer, kms: KmsServer,
                                        upstream: FakeUpstream) -> None:
    gw, url = pg_gateway
    akid, secret = kms.add_credential()
    gw.cli("tenants", "create", "pg", "--xks-endpoint", kms.xks_endpoint, "--key-id",
           "tenant-b", "--access-key-id", akid, stdin=secret)
    provider_key = f"sk-pg-planted-{uuid.uuid4().hex}"
    gw.cli("provider-keys", "add", "pg", "--provider", "openai", "--base-url",
           upstream.base_url, stdin=provider_key)
    vk = gw.cli_json("virtual-keys", "create", "pg")
    gw.start()
    prompt = f"PLANTED-PG-PROMPT-{uuid.uuid4().hex}"
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=20,
                   headers={"Authorization": f"Bearer {vk['key']}"},
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == answer_for(
        prompt)
    assert upstream.authorizations[-1] == f"Bearer {provider_key}"
    # The row is written by the group-commit writer within milliseconds of the answer.
    deadline = time.monotonic() + 10
    while gw.cli("logs", "show", "pg", r.headers["x-gateway-request-id"],
                 check=False).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    shown = gw.cli_json("logs", "show", "pg", r.headers["x-gateway-request-id"])
    assert shown["prompt"]["messages"][0]["content"] == prompt

    dbname = url.rsplit("/", 1)[1]
    dump = subprocess.run([str(postgres.bindir / "pg_dump"), "-h", "127.0.0.1", "-p",
                           str(postgres.port), "-U", "kms", dbname],
                          capture_output=True, check=True).stdout
    assert b"request_logs" in dump and len(dump) > 2000
    for needle in (prompt, answer_for(prompt), provider_key, secret, vk["key"]):
        assert needle.encode() not in dump
