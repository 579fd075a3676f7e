"""The kill switch end to end: revoke tenant A's key at its KMS; A stops, B does not."""

from __future__ import annotations

import time

import httpx

from tests.gateway.conftest import World
from tests.gateway.harness import GatewayProcess
from tests.server import free_port

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "still there?"}]}


def post(world: World, key: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(world.gateway.url + CHAT, json=BODY, timeout=20,
                      headers={"Authorization": f"Bearer {key}", **(headers or {})})


def wait_for(world: World, key: str, status: int, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while True:
        if post(world, key).status_code == status:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"no {status} after {timeout} s"
        time.sleep(0.02)


def test_revoking_a_tenant_key_cuts_that_tenant_off(world: World) -> None:
    a, b = world.virtual_key("a")["key"], world.virtual_key("b")["key"]
    before = post(world, a)
    assert before.status_code == 200
    a_request = before.headers["x-gateway-request-id"]
    assert post(world, b).status_code == 200

    world.kms.cli("keys", "revoke", "tenant-a", "--reason", "kill switch test")
    try:
        cut_off = wait_for(world, a, 403)
        print(f"\nkill switch: tenant A refused {cut_off * 1000:.0f} ms after `kms keys revoke` "
              "returned")
        refused = post(world, a)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "customer_key_revoked"
        assert "revoked" in refused.json()["error"]["message"]
        # Without logging (no prompt to encrypt), the provider key cannot be decrypted either.
        assert post(world, a, {"x-gateway-no-store": "1"}).status_code == 403
        assert post(world, b).status_code == 200

        shown = world.gateway.cli("logs", "show", "a", a_request, check=False)
        assert shown.returncode == 1
        assert "revoked" in shown.stderr and "Traceback" not in shown.stderr
        assert shown.stdout == ""
    finally:
        world.kms.cli("keys", "enable", "tenant-a")
    back = wait_for(world, a, 200)
    print(f"kill switch: tenant A served again {back * 1000:.0f} ms after `kms keys enable`")
    assert world.gateway.cli_json("logs", "show", "a", a_request)["status"] == 200


def test_an_unreachable_key_service_is_503_not_revoked(world: World) -> None:
    dead = f"http://127.0.0.1:{free_port()}/cmk"
    world.gateway.cli("tenants", "create", "c", "--xks-endpoint", dead, "--key-id", "tenant-c",
                      "--access-key-id", "AKIAEXAMPLEEXAMPLE00", stdin="x" * 40)
    r = post(world, world.virtual_key("c")["key"])
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "customer_key_unreachable"


def test_revoked_key_refuses_cli_set_up(world: World) -> None:
    gw: GatewayProcess = world.gateway
    world.kms.cli("keys", "revoke", "tenant-b", "--reason", "test")
    try:
        out = gw.cli("provider-keys", "add", "b", "--provider", "other", "--base-url",
                     world.upstream.base_url, stdin="sk-never-stored", check=False)
        assert out.returncode == 1 and "revoked" in out.stderr
    finally:
        world.kms.cli("keys", "enable", "tenant-b")
