"""What the gateway stores: nothing in clear (raw SQLite bytes), logs readable only through
the tenant's key, blobs bound to their tenant, row and field."""

from __future__ import annotations

import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.gateway.conftest import World
from tests.gateway.fake_upstream import answer_for

CHAT = "/v1/chat/completions"


def chat(world: World, key: str, prompt: str, *, stream: bool = False,
         headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    return httpx.post(world.gateway.url + CHAT, json=body, timeout=20,
                      headers={"Authorization": f"Bearer {key}", **(headers or {})})


def raw_database(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def wait_for_rows(world: World, *request_ids: str) -> None:
    """The log row of a request is written by a group-commit writer within milliseconds of
    the response (docs/gateway.md): wait for it before reading the database directly."""
    deadline = time.monotonic() + 10
    db = sqlite3.connect(world.gateway.db_path, timeout=30)
    try:
        while True:
            marks = ",".join("?" * len(request_ids))
            (n,) = db.execute(f"SELECT count(*) FROM request_logs WHERE id IN ({marks})",
                              request_ids).fetchone()
            if n == len(request_ids):
                return
            assert time.monotonic() < deadline, "log rows not written within 10 s"
            time.sleep(0.02)
    finally:
        db.close()


def wait_for_response_logged(world: World, tenant: str, request_id: str) -> dict[str, object]:
    wait_for_rows(world, request_id)
    deadline = time.monotonic() + 10
    while True:
        shown: dict[str, object] = world.gateway.cli_json("logs", "show", tenant, request_id)
        if shown["response"] is not None or time.monotonic() > deadline:
            return shown
        time.sleep(0.1)


def test_database_and_server_log_hold_no_secret_in_clear(world: World) -> None:
    vk = world.virtual_key("a")
    planted = f"PLANTED-PROMPT-{uuid.uuid4().hex}"
    assert chat(world, vk["key"], planted).status_code == 200
    r = chat(world, vk["key"], planted + "-streamed", stream=True)
    assert r.status_code == 200 and answer_for(planted + "-streamed")[:5] in r.text
    wait_for_response_logged(world, "a", r.headers["x-gateway-request-id"])

    raw = raw_database(world.gateway.db_path)
    assert len(raw) > 10_000
    needles = [planted, answer_for(planted), answer_for(planted + "-streamed")[:10],
               vk["key"], *world.provider_keys.values(), *world.xks_secrets]
    for needle in needles:
        assert needle.encode() not in raw, "found in the database in clear"
    server_log = (world.gateway.home / "serve.log").read_bytes()
    for needle in [vk["key"], *world.provider_keys.values(), *world.xks_secrets]:
        assert needle.encode() not in server_log
    listing = world.gateway.cli("provider-keys", "list", "a", "--json").stdout
    assert not any(k in listing for k in world.provider_keys.values())


def test_logs_list_and_show_decrypt_through_the_tenant_key(world: World) -> None:
    vk = world.virtual_key("b")
    prompt = f"log me {uuid.uuid4().hex}"
    plain = chat(world, vk["key"], prompt)
    streamed = chat(world, vk["key"], prompt + " streamed", stream=True)
    no_store = chat(world, vk["key"], prompt + " forget", headers={"x-gateway-no-store": "1"})
    assert {plain.status_code, streamed.status_code, no_store.status_code} == {200}
    wait_for_rows(world, plain.headers["x-gateway-request-id"],
                  streamed.headers["x-gateway-request-id"])

    listed = world.gateway.cli_json("logs", "list", "b")["requests"]
    ids = {row["id"] for row in listed}
    assert plain.headers["x-gateway-request-id"] in ids
    assert no_store.headers["x-gateway-request-id"] not in ids
    row = next(r for r in listed if r["id"] == plain.headers["x-gateway-request-id"])
    assert row["virtual_key_id"] == vk["id"] and row["status"] == 200 and row["total_tokens"]

    shown = world.gateway.cli_json("logs", "show", "b", plain.headers["x-gateway-request-id"])
    assert shown["prompt"]["messages"][0]["content"] == prompt
    assert shown["response"]["choices"][0]["message"]["content"] == answer_for(prompt)
    assert shown["meta"]["model"] == "gpt-4o" and shown["meta"]["virtual_key_id"] == vk["id"]

    # Each decrypt of `logs show` is in the tenant's KMS audit log, with the gateway's
    # principal and the gateway request id.
    out = Path(tempfile.mkdtemp(prefix="audit-"))
    world.kms.cli("audit", "export", str(out / "x"))
    exported = b"".join(f.read_bytes() for f in out.rglob("*") if f.is_file())
    assert plain.headers["x-gateway-request-id"].encode() in exported
    assert b"role/ai-gateway" in exported

    kept = world.gateway.cli_json("logs", "purge", "b", "--older-than-days", "1")
    assert kept["deleted"] == 0
    s = wait_for_response_logged(world, "b", streamed.headers["x-gateway-request-id"])
    assert s["response"]["choices"][0]["message"]["content"] == answer_for(  # type: ignore[index]
        prompt + " streamed")


def test_a_blob_copied_to_another_row_or_tenant_does_not_decrypt(world: World) -> None:
    a_id = chat(world, world.virtual_key("a")["key"], "from A").headers["x-gateway-request-id"]
    a_other = chat(world, world.virtual_key("a")["key"], "A again").headers["x-gateway-request-id"]
    b_id = chat(world, world.virtual_key("b")["key"], "from B").headers["x-gateway-request-id"]
    wait_for_rows(world, a_id, a_other, b_id)
    db = sqlite3.connect(world.gateway.db_path, timeout=30)
    try:
        (a_blob,) = db.execute("SELECT prompt_blob FROM request_logs WHERE id = ?",
                               (a_id,)).fetchone()
        with db:
            db.execute("UPDATE request_logs SET prompt_blob = ? WHERE id IN (?, ?)",
                       (a_blob, b_id, a_other))
        (pk_a,) = db.execute("SELECT api_key_blob FROM provider_keys WHERE tenant_id = 'a' "
                             "ORDER BY created_at DESC LIMIT 1").fetchone()
        assert b"sk-" not in pk_a
    finally:
        db.close()
    for tenant, request_id in (("b", b_id), ("a", a_other)):
        result = world.gateway.cli("logs", "show", tenant, request_id, check=False)
        assert result.returncode == 1
        assert "could not be decrypted" in result.stderr
        assert "Traceback" not in result.stderr
    assert world.gateway.cli_json("logs", "show", "a", a_id)["prompt"]["messages"][0][
        "content"] == "from A"
