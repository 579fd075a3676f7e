"""Planted secrets (admin tokens, the PIN, an XKS secret) never reach a log line, /metrics
or the database file; every log line is JSON. Plus the redaction processor itself."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from kms.logging import REDACTED, REDACTED_BYTES, redact
from tests.admin.conftest import Live
from tests.conftest import TEST_PIN

A = "/admin/v1"


def test_planted_secrets_are_nowhere(live: Live) -> None:
    admin = live.tokens["admin"]
    planted = [*live.tokens.values(), TEST_PIN]
    xks_secret = base64.b64encode(secrets.token_bytes(33)).decode()
    planted.append(xks_secret)
    fake = "kmsat_" + secrets.token_urlsafe(32)
    planted.append(fake)
    for token in live.tokens.values():
        live.request("GET", f"{A}/keys", token, **{"X-Request-Id": "plant-1"})
    # Secrets in headers, query strings and (valid and invalid) bodies.
    live.request("GET", f"{A}/keys?pin={TEST_PIN}&token={fake}", admin,
                 **{"X-Pin": TEST_PIN, "Cookie": f"s={fake}"})
    r = live.request("POST", f"{A}/stores/default/credentials", admin,
                     json={"accessKeyId": "ABCDEFGHIJKLMNOPQRST", "secret": xks_secret})
    assert r.status_code == 201, r.text
    live.request("POST", f"{A}/keys", admin, json={"keyId": TEST_PIN + "!", "pin": TEST_PIN})
    live.request("POST", f"{A}/tokens", admin, json={"name": "x", "role": fake})
    live.request("POST", f"{A}/keys", None, json={"keyId": "k", "token": fake})
    live.request("GET", f"{A}/keys", fake)
    generated = live.request("POST", f"{A}/stores/default/credentials", admin, json={}).json()
    planted.append(generated["secret"])
    created = live.request("POST", f"{A}/tokens", admin,
                           json={"name": "fresh", "role": "auditor"}).json()
    planted.append(created["token"])
    live.request("GET", f"{A}/whoami", created["token"])
    # An XKS refusal (the front door, not the middleware) logs its line with its id too.
    prefix = live.runtime.registry.get_store("default").uri_prefix
    refused = live.request("POST", f"/{prefix}/kms/xks/v1/keys/k/encrypt", None, json={},
                           **{"X-Request-Id": "plant-xks"})
    assert refused.status_code == 401
    assert refused.headers["x-request-id"] == "plant-xks"
    metrics = live.request("GET", "/metrics").text
    assert "kms_requests_total" in metrics

    logs = live.logs.text()
    lines = [line for line in logs.splitlines() if line.strip()]
    assert len(lines) > 10
    for line in lines:
        json.loads(line)  # every line is one JSON object
    assert any(json.loads(line).get("request_id") == "plant-1" for line in lines)
    xks_lines = [json.loads(line) for line in lines
                 if json.loads(line).get("request_id") == "plant-xks"]
    # One line: bound for its own request only (the /metrics request after it has its own).
    assert [(x["event"], x["status"]) for x in xks_lines] == [("http_request", 401)]
    db = Path(str(live.runtime.engine.url).removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    for secret in planted:
        assert secret not in logs
        assert secret not in metrics
        assert secret.encode() not in stored


def test_request_id_round_trip(live: Live) -> None:
    r = live.request("GET", "/healthz", **{"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = live.request("GET", "/healthz", **{"X-Request-Id": "bad id<script>"})
    assert "<" not in r.headers["x-request-id"] and len(r.headers["x-request-id"]) == 32


def test_redaction_processor() -> None:
    event = {
        "event": "calling with Bearer kmsat_abcdefghijklmnop and more",
        "pin": "1234", "KMS_PKCS11_PIN": "1234", "user_pin": "1", "password": "p",
        "secret_access_key": "s", "token": "t", "Authorization": "x", "aad": "a",
        "plaintext": "p", "key_material": "k", "ciphertext": b"\x00\x01",
        "nested": {"inner": {"secret": "s", "ok": 1}, "list": [b"raw", "fine"]},
        "mapping": "fine", "spinner": "fine", "route": "/admin/v1/keys",
    }
    out = redact(None, "info", dict(event))
    for key in ("pin", "KMS_PKCS11_PIN", "user_pin", "password", "secret_access_key",
                "token", "Authorization", "aad", "plaintext", "key_material"):
        assert out[key] == REDACTED, key
    assert out["ciphertext"] == REDACTED_BYTES
    assert out["nested"] == {"inner": {"secret": REDACTED, "ok": 1},
                             "list": [REDACTED_BYTES, "fine"]}
    assert "kmsat_abc" not in out["event"] and "Bearer" not in out["event"]
    assert out["mapping"] == out["spinner"] == "fine"
    assert out["route"] == "/admin/v1/keys"
    url = redact(None, "info", {"event": "GET /x?a=1&user_pin=1234&b=2"})["event"]
    assert url == f"GET /x?a=1&user_pin={REDACTED}&b=2"
