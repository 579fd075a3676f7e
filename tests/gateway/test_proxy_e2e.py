"""End to end with the official ``openai`` client: client -> gateway -> fake upstream, the
tenants' keys in a real ``kms serve`` over XKS (issue 7, acceptance)."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import pytest

from tests.gateway.conftest import World
from tests.gateway.fake_upstream import answer_for


def client(world: World, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=world.gateway.url + "/v1", api_key=key, max_retries=0,
                         timeout=20)


def test_completion_stream_and_models(world: World) -> None:
    vk = world.gateway.cli_json("virtual-keys", "create", "a", "--models", "gpt-4o-mini,gpt-4o",
                                "--env", "prod", "--expires-in-days", "1")
    assert vk["key"].startswith("gwk-prod-") and vk["id"].startswith("vk_")
    oa = client(world, vk["key"])
    prompt = f"hello {uuid.uuid4().hex}"
    done = oa.chat.completions.create(model="gpt-4o-mini",
                                      messages=[{"role": "user", "content": prompt}])
    assert done.choices[0].message.content == answer_for(prompt)
    assert done.usage is not None and done.usage.total_tokens > 0

    chunks = oa.chat.completions.create(model="gpt-4o", stream=True,
                                        stream_options={"include_usage": True},
                                        messages=[{"role": "user", "content": prompt}])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer_for(prompt)

    assert sorted(m.id for m in oa.models.list()) == ["gpt-4o", "gpt-4o-mini"]

    with pytest.raises(openai.PermissionDeniedError) as denied:
        oa.chat.completions.create(model="o3-mini", messages=[{"role": "user", "content": "x"}])
    assert denied.value.code == "model_not_allowed"


def test_each_tenant_reaches_the_upstream_with_its_own_key(world: World) -> None:
    for tenant in ("a", "b"):
        oa = client(world, world.virtual_key(tenant)["key"])
        before = len(world.upstream.authorizations)
        oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        seen = world.upstream.authorizations[before:]
        assert seen[-1] == f"Bearer {world.provider_keys[tenant]}"
        if tenant == "a":  # the first key was refused with 429: failover to the second
            assert len(seen) == 2 and "fail-429" in seen[0]
        else:
            assert len(seen) == 1


def test_wrong_virtual_key_is_401_in_openai_shape(world: World) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        client(world, "gwk-prod-" + "x" * 43).models.list()
    assert err.value.status_code == 401
    r = httpx.post(world.gateway.url + "/v1/chat/completions", json={"model": "gpt-4o"},
                   headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert set(r.json()["error"]) >= {"message", "type", "code"}
    assert r.json()["error"]["type"] == "authentication_error"

    vk = world.virtual_key("b")
    world.gateway.cli("virtual-keys", "revoke", vk["id"])
    with pytest.raises(openai.AuthenticationError):
        client(world, vk["key"]).models.list()


def test_over_the_rate_limit_is_429_with_headers(world: World) -> None:
    vk = world.virtual_key("b", rpm=2)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "count me"}]}
    headers = {"Authorization": f"Bearer {vk['key']}"}
    url = world.gateway.url + "/v1/chat/completions"
    first = httpx.post(url, json=body, headers=headers)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert httpx.post(url, json=body, headers=headers).status_code == 200
    third = httpx.post(url, json=body, headers=headers)
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(third.headers["retry-after"]) >= 1
    assert third.headers["x-ratelimit-reset-requests"].endswith("s")
    with pytest.raises(openai.RateLimitError):
        client(world, vk["key"]).chat.completions.create(**body)  # type: ignore[call-overload]


def test_the_tenant_wide_limit_spans_its_virtual_keys(world: World) -> None:
    akid, secret = world.kms.add_credential()
    world.gateway.cli("tenants", "create", "limited", "--xks-endpoint", world.kms.xks_endpoint,
                      "--key-id", "tenant-b", "--access-key-id", akid, "--rpm", "2",
                      stdin=secret)
    world.gateway.cli("provider-keys", "add", "limited", "--provider", "openai",
                      "--base-url", world.upstream.base_url, stdin="sk-limited")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "count me"}]}
    url = world.gateway.url + "/v1/chat/completions"
    codes = [httpx.post(url, json=body, timeout=20,
                        headers={"Authorization": f"Bearer {world.virtual_key('limited')['key']}"}
                        ).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_stream_client_disconnect_cancels_the_upstream_call(world: World) -> None:
    vk = world.virtual_key("b")
    world.upstream.stream_cancelled.clear()
    body = {"model": "gpt-4o", "stream": True,
            "messages": [{"role": "user", "content": "SLOW please"}]}
    started = time.monotonic()
    with httpx.stream("POST", world.gateway.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {vk['key']}"}, timeout=20) as r:
        assert r.status_code == 200
        first = next(r.iter_raw())
        assert b"data:" in first
    # The full stream would take 10 s; closing the client must stop the upstream at once.
    assert world.upstream.stream_cancelled.wait(5)
    assert time.monotonic() - started < 5
