"""PII redaction (issue 7 item 8): the detectors with true positives and near misses, the
chat-body redaction, the two modes end to end with the official ``openai`` client, and the
upgrade of a gateway database made at schema version 1."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import inspect, text

from gateway import db, pii
from gateway.db import make_engine
from kms.migrate import current_version, migrate
from tests.gateway.conftest import World
from tests.gateway.harness import GATEWAY
from tests.gateway.test_stored_data import wait_for_response_logged
from tests.server import ROOT

# -- detectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, token", [
    ("to jane.doe+news@mail.example.co.uk", "[EMAIL]"),
    ("a@b.io", "[EMAIL]"),
    ("call +44 20 7946 0958", "[PHONE]"),
    ("call +1 (555) 123-4567", "[PHONE]"),
    ("call (555) 123-4567", "[PHONE]"),
    ("call 555-123-4567", "[PHONE]"),
    ("call 555.123.4567", "[PHONE]"),
    ("ssn 123-45-6789", "[SSN]"),
    ("card 4111 1111 1111 1111", "[CARD]"),
    ("card 4111-1111-1111-1111", "[CARD]"),
    ("card 5500005555555559", "[CARD]"),
    ("amex 378282246310005", "[CARD]"),
    ("iban DE89 3704 0044 0532 0130 00", "[IBAN]"),
    ("iban GB82WEST12345698765432", "[IBAN]"),
    ("iban FR1420041010050500013M02606", "[IBAN]"),
    ("key sk-proj-Ab3dEf6hIj9kLm2nOp5q", "[API_KEY]"),
    ("key sk-ant-api03-abcdefghijklmnopqrstuv", "[API_KEY]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "[API_KEY]"),
    ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[API_KEY]"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "Bearer [API_KEY]"),
    ("token q7Xv2LpR9sKd4mWz8TnB3yHc6JfG1aEu", "[API_KEY]"),
])
def test_detectors_find_true_positives(text: str, token: str) -> None:
    out = pii.redact_text(text)
    value = text.split(" ", 1)[1] if " " in text else text  # what follows the label
    assert out == (text.split(" ", 1)[0] + " " + token if " " in text else token) or (
        token.startswith("Bearer") and out.endswith(token)), out
    assert value not in out


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112",          # Luhn check fails
    "card 4111-1111-1111-1113",
    "order 1234567812345678",             # a 16-digit run that fails Luhn
    "id 12345678901234567890123",         # too long for a card
    "iban DE88 3704 0044 0532 0130 00",   # mod-97 fails (check digits)
    "iban DE89 3704 0044 0532 01",        # wrong length for DE
    "iban XX00 1234 5678 9012 34",        # not a valid check
    "ssn 000-12-3456 666-12-3456 923-45-6789 123-00-4567 123-45-0000",
    "ssn 123-45-67890",
    "date 2024-01-15, version 1.2.3, ip 192.168.10.1, port 8080, year 1999",
    "epoch 1700000000000 and order 12345",
    "bare digits 5551234567",             # no separators: not taken for a phone
    "sha 3f786850e387550fdab836ed7e6dc881de23001b",  # hex digest: two classes only
    "word supercalifragilisticexpialidociousandmoreletters",
    "path /usr/local/lib/python3.11/site-packages",
    "not an email: user@localhost or @handle",
    "sk-short",
    "AKIA123",
    "the bearer of bad news",
])
def test_detectors_leave_near_misses_alone(text: str) -> None:
    assert pii.redact_text(text) == text


def test_checksums() -> None:
    assert pii.luhn_valid("4111111111111111") and not pii.luhn_valid("4111111111111112")
    assert pii.iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not pii.iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not pii.iban_valid("GB82 WEST 1234 5698 7654")  # wrong length for GB
    assert pii.looks_like_secret("q7Xv2LpR9sKd4mWz8TnB3yHc6JfG1aEu")
    assert not pii.looks_like_secret("a" * 40) and not pii.looks_like_secret("ab12" * 10)


def test_several_values_in_one_text() -> None:
    text = ("Hi, I'm Jo (jo@example.com, +33 1 42 68 53 00), SSN 078-05-1120, card "
            "4242 4242 4242 4242, IBAN NL91ABNA0417164300, key AKIAIOSFODNN7EXAMPLE.")
    assert pii.redact_text(text) == (
        "Hi, I'm Jo ([EMAIL], [PHONE]), SSN [SSN], card [CARD], IBAN [IBAN], key [API_KEY].")


def test_request_and_completion_redaction_touch_only_contents() -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "user": "jo@example.com", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "mail jo@example.com"},
        {"role": "user", "content": [{"type": "text", "text": "card 4111111111111111"},
                                     {"type": "image_url", "image_url": {"url": "x"}}]}]}
    out = pii.redact_request(body)
    assert out["messages"][1]["content"] == "mail [EMAIL]"
    assert out["messages"][2]["content"][0] == {"type": "text", "text": "card [CARD]"}
    assert out["messages"][2]["content"][1] == body["messages"][2]["content"][1]
    assert out["user"] == body["user"]  # not a message content
    assert body["messages"][1]["content"] == "mail jo@example.com"  # the input is not changed
    completion = {"id": "chatcmpl-q7Xv2LpR9sKd4mWz8TnB3yHc6JfG1aEu", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "it is jo@example.com"}}]}
    red = pii.redact_completion(completion)
    assert red["choices"][0]["message"]["content"] == "it is [EMAIL]"
    assert red["id"] == completion["id"]
    assert pii.redact_response_bytes(b"not json jo@example.com") == b"not json [EMAIL]"


# -- end to end ------------------------------------------------------------------------------

SECRET_TEXT = ("My email is {tag}@example.com, card 4111 1111 1111 1111, SSN 123-45-6789, "
               "phone +1 (555) 123-4567, IBAN DE89 3704 0044 0532 0130 00, "
               "key sk-live-{tag}")
VALUES = ("@example.com", "4111 1111 1111 1111", "123-45-6789", "(555) 123-4567",
          "DE89 3704 0044 0532 0130 00", "sk-live-")


def _tenant(world: World, name: str, mode: str) -> str:
    akid, secret = world.kms.add_credential()
    world.gateway.cli("tenants", "create", name, "--xks-endpoint", world.kms.xks_endpoint,
                      "--key-id", "tenant-b", "--access-key-id", akid, "--pii", mode,
                      stdin=secret)
    world.gateway.cli("provider-keys", "add", name, "--provider", "openai", "--base-url",
                      world.upstream.base_url, stdin=f"sk-{name}-{uuid.uuid4().hex}")
    return world.virtual_key(name)["key"]


def _client(world: World, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=world.gateway.url + "/v1", api_key=key, max_retries=0,
                         timeout=20)


def test_forward_mode_the_upstream_and_the_log_see_redacted_text(world: World) -> None:
    oa = _client(world, _tenant(world, "pii-fwd", "forward"))
    prompt = SECRET_TEXT.format(tag=uuid.uuid4().hex[:12])
    raw = oa.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}])
    seen = world.upstream.bodies[-1]["messages"][0]["content"]
    for value in VALUES:
        assert value not in seen, f"{value!r} reached the provider"
    for token in ("[EMAIL]", "[CARD]", "[SSN]", "[PHONE]", "[IBAN]", "[API_KEY]"):
        assert token in seen
    # The answer passes through unchanged (the provider only ever saw the tokens).
    assert "[EMAIL]" in (raw.parse().choices[0].message.content or "")[::-1]
    shown = wait_for_response_logged(world, "pii-fwd", raw.headers["x-gateway-request-id"])
    assert shown["prompt"]["messages"][0]["content"] == seen  # type: ignore[index]
    assert shown["meta"]["pii"] == "forward"  # type: ignore[index]

    # Streaming: the upstream got the redacted text as well.
    chunks = oa.chat.completions.create(model="gpt-4o", stream=True,
                                        messages=[{"role": "user", "content": prompt}])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "[CARD]" in world.upstream.bodies[-1]["messages"][0]["content"]


def test_logs_mode_the_upstream_sees_the_original_the_log_is_redacted(world: World) -> None:
    key = _tenant(world, "pii-logs", "logs")
    oa = _client(world, key)
    prompt = SECRET_TEXT.format(tag=uuid.uuid4().hex[:12])
    raw = oa.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}])
    assert world.upstream.bodies[-1]["messages"][0]["content"] == prompt
    answer = raw.parse().choices[0].message.content
    assert answer is not None and "4111 1111 1111 1111"[::-1] in answer  # the client: as is

    shown = wait_for_response_logged(world, "pii-logs", raw.headers["x-gateway-request-id"])
    text_out = str(shown["prompt"]) + str(shown["response"])
    for value in VALUES:
        assert value not in text_out, f"{value!r} in the stored log"
    assert "[CARD]" in shown["prompt"]["messages"][0]["content"]  # type: ignore[index]

    # A stream is stored redacted too (the assembled completion). The fake upstream answers
    # with the prompt reversed: this one makes it answer with an e-mail address.
    tag = uuid.uuid4().hex[:8]
    stream_prompt = f"my mail is s-{tag}@example.org please " + f"ans-{tag}@example.net"[::-1]
    chunks = oa.chat.completions.create(model="gpt-4o", stream=True,
                                        messages=[{"role": "user", "content": stream_prompt}])
    request_id = chunks.response.headers["x-gateway-request-id"]
    text_in = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert f"ans-{tag}@example.net" in text_in  # the client got the answer unchanged
    shown = wait_for_response_logged(world, "pii-logs", request_id)
    stored = str(shown["prompt"]) + str(shown["response"])
    assert "@example.org" not in stored and "@example.net" not in stored
    assert shown["prompt"]["messages"][0]["content"].startswith(  # type: ignore[index]
        "my mail is [EMAIL] please")
    assert shown["response"]["choices"][0]["message"]["content"].startswith(  # type: ignore[index]
        "ANSWER([EMAIL]")

    # set-pii off: applies within the gateway's cache TTL (GATEWAY_CACHE_SECONDS).
    out = world.gateway.cli_json("tenants", "set-pii", "pii-logs", "off")
    assert out == {"id": "pii-logs", "pii": "off"}
    listed = world.gateway.cli_json("tenants", "list")["tenants"]
    assert {t["id"]: t["pii"] for t in listed}["pii-logs"] == "off"


def test_set_pii_rejects_unknown_modes_and_tenants(world: World) -> None:
    bad = world.gateway.cli("tenants", "set-pii", "a", "sometimes", check=False)
    assert bad.returncode == 2
    missing = world.gateway.cli("tenants", "set-pii", "no-such-tenant", "logs", check=False)
    assert missing.returncode == 1 and "no tenant" in missing.stderr


# -- schema upgrade --------------------------------------------------------------------------


def test_a_version_one_database_upgrades_with_gateway_init() -> None:
    home = Path(tempfile.mkdtemp(prefix="gateway-v1-"))
    engine = make_engine(f"sqlite:///{home / 'gateway.db'}")
    assert migrate(engine, db.metadata, target=1) == 1
    assert "pii_mode" not in {c["name"] for c in inspect(engine).get_columns("tenants")}
    with engine.begin() as conn:  # a v1-era tenant, written with v1's columns only
        conn.execute(text(
            "INSERT INTO tenants (id, xks_endpoint, key_id, access_key_id, secret_sealed, "
            "created_at) VALUES ('old', 'http://127.0.0.1:1/xks', 'k', 'AKID', x'00', "
            "'2026-01-01 00:00:00')"))
    engine.dispose()

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_HOME"] = str(home)

    def gw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([GATEWAY, *args], env=env, text=True, capture_output=True,
                              cwd=ROOT, timeout=60, check=True)

    gw("init")
    engine = make_engine(f"sqlite:///{home / 'gateway.db'}")
    try:
        assert current_version(engine) == 2
        assert "pii_mode" in {c["name"] for c in inspect(engine).get_columns("tenants")}
    finally:
        engine.dispose()
    gw("init")  # idempotent
    assert '"pii": "off"' in gw("tenants", "list", "--json").stdout
    gw("tenants", "set-pii", "old", "forward")
    with sqlite3.connect(home / "gateway.db") as raw:
        assert raw.execute("SELECT pii_mode FROM tenants WHERE id = 'old'").fetchone() == (
            "forward",)
