"""Every admin endpoint with no token, a wrong, an expired, a revoked, an XKS-style and an
auditor token, then an admin token, over real HTTP (docs/operations.md, "Tokens and roles").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from hsm import AesUsage
from kms.audit.event import cli_actor
from kms.db import schema as t
from kms.keys.model import KeyUsage
from kms.runtime import Runtime
from kms.tokens import Role, TokenService
from tests.admin.conftest import Live

ALL = frozenset({KeyUsage.ENCRYPT, KeyUsage.DECRYPT})
Prepare = Callable[[Runtime, str], tuple[str, Any]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # for ids only
    role: Role  # the least role that may call it
    ok: int
    prepare: Prepare


def _key(rt: Runtime, u: str, *then: str) -> str:
    key_id = f"k-{u}"
    rt.keys.create_key(key_id, ALL, cli_actor())
    for step in then:
        if step == "revoke":
            rt.keys.revoke(key_id, "test", cli_actor())
        elif step == "schedule":
            rt.keys.schedule_deletion(key_id, 7, cli_actor())
    return key_id


def _credential(rt: Runtime, u: str) -> str:
    akid, _ = rt.credentials.add("default", None, None, cli_actor())
    return akid


def _hsm_key(rt: Runtime, u: str) -> str:
    label = f"customer-{u}"
    rt.hsm.generate_aes_key(label, [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    return label


def _store(rt: Runtime, u: str) -> str:
    rt.keys.create_store(f"s-{u}", f"p-{u}", cli_actor())
    return f"s-{u}"


def _token(rt: Runtime, u: str) -> str:
    TokenService(rt.engine, rt.audit, rt.clock).create(f"victim-{u}", Role.AUDITOR,
                                                       cli_actor())
    return f"victim-{u}"


A = "/admin/v1"
ENDPOINTS = [
    # -- reads: auditor and admin ---------------------------------------------------------
    Endpoint("GET", "/whoami", Role.AUDITOR, 200, lambda rt, u: (f"{A}/whoami", None)),
    Endpoint("GET", "/keys", Role.AUDITOR, 200, lambda rt, u: (f"{A}/keys", None)),
    Endpoint("GET", "/keys/{id}", Role.AUDITOR, 200,
             lambda rt, u: (f"{A}/keys/{_key(rt, u)}", None)),
    Endpoint("GET", "/stores", Role.AUDITOR, 200, lambda rt, u: (f"{A}/stores", None)),
    Endpoint("GET", "/stores/{s}", Role.AUDITOR, 200,
             lambda rt, u: (f"{A}/stores/default", None)),
    Endpoint("GET", "/audit/public-key", Role.AUDITOR, 200,
             lambda rt, u: (f"{A}/audit/public-key", None)),
    Endpoint("GET", "/audit/head", Role.AUDITOR, 200, lambda rt, u: (f"{A}/audit/head", None)),
    Endpoint("GET", "/audit/checkpoints", Role.AUDITOR, 200,
             lambda rt, u: (f"{A}/audit/checkpoints", None)),
    Endpoint("GET", "/audit/checkpoints/latest", Role.AUDITOR, 200,
             lambda rt, u: (f"{A}/audit/checkpoints/latest", None)),
    Endpoint("GET", "/audit/records", Role.AUDITOR, 200,
             lambda rt, u: (f"{A}/audit/records?start=0&limit=5", None)),
    # -- changes: admin only --------------------------------------------------------------
    Endpoint("POST", "/keys", Role.ADMIN, 201,
             lambda rt, u: (f"{A}/keys", {"keyId": f"new-{u}", "usage": ["ENCRYPT"]})),
    Endpoint("POST", "/keys/import-hsm", Role.ADMIN, 201,
             lambda rt, u: (f"{A}/keys/import-hsm",
                            {"keyId": f"imp-{u}", "label": _hsm_key(rt, u)})),
    Endpoint("POST", "/keys/{id}/rotate", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/keys/{_key(rt, u)}/rotate", None)),
    Endpoint("POST", "/keys/{id}/min-decrypt-version", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/keys/{_key(rt, u)}/min-decrypt-version", {"version": 1})),
    Endpoint("PUT", "/keys/{id}/rules", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/keys/{_key(rt, u)}/rules",
                            {"rules": {"kmsViaService": ["gateway"]}})),
    Endpoint("POST", "/keys/{id}/revoke", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/keys/{_key(rt, u)}/revoke", {"reason": "incident"})),
    Endpoint("POST", "/keys/{id}/enable", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/keys/{_key(rt, u, 'revoke')}/enable", None)),
    Endpoint("POST", "/keys/{id}/schedule-deletion", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/keys/{_key(rt, u)}/schedule-deletion", {"days": 7})),
    Endpoint("POST", "/keys/{id}/cancel-deletion", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/keys/{_key(rt, u, 'schedule')}/cancel-deletion", None)),
    Endpoint("POST", "/keys/{id}/destroy", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/keys/k-{u}/destroy",
                            {"confirm": _key(rt, u, "revoke")})),
    Endpoint("POST", "/stores", Role.ADMIN, 201,
             lambda rt, u: (f"{A}/stores", {"name": f"s-{u}", "uriPrefix": f"p/{u}"})),
    Endpoint("POST", "/stores/{s}/disable", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/stores/{_store(rt, u)}/disable", None)),
    Endpoint("POST", "/stores/{s}/enable", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/stores/{_store(rt, u)}/enable", None)),
    Endpoint("GET", "/stores/{s}/credentials", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/stores/default/credentials", None)),
    Endpoint("POST", "/stores/{s}/credentials", Role.ADMIN, 201,
             lambda rt, u: (f"{A}/stores/default/credentials", {})),
    Endpoint("DELETE", "/stores/{s}/credentials/{id}", Role.ADMIN, 204,
             lambda rt, u: (f"{A}/stores/default/credentials/{_credential(rt, u)}", None)),
    Endpoint("GET", "/tokens", Role.ADMIN, 200, lambda rt, u: (f"{A}/tokens", None)),
    Endpoint("POST", "/tokens", Role.ADMIN, 201,
             lambda rt, u: (f"{A}/tokens", {"name": f"t-{u}", "role": "auditor"})),
    Endpoint("POST", "/tokens/{name}/revoke", Role.ADMIN, 200,
             lambda rt, u: (f"{A}/tokens/{_token(rt, u)}/revoke", None)),
]


def test_every_admin_route_is_in_the_matrix(live: Live) -> None:
    doc = live.request("GET", "/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() if p.startswith(A)
                  for m in ops}
    assert len(documented) == len(ENDPOINTS)


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
def test_roles(live: Live, ep: Endpoint) -> None:
    rt = live.runtime
    path, body = ep.prepare(rt, uuid.uuid4().hex[:10])
    before = rt.audit.head().size

    def call(token: str | None, **headers: str) -> int:
        r = live.request(ep.method, path, token, json=body, **headers)
        if r.status_code >= 400:
            err = r.json()
            assert set(err) == {"errorName", "errorMessage"}
        return r.status_code

    for who in ("wrong", "expired", "revoked"):
        assert call(live.tokens[who]) == 401, who
    assert call(None) == 401
    # An XKS SigV4 Authorization header is never an admin credential.
    assert call(None, Authorization="AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/"
                "us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host, Signature=00") == 401
    assert call(None, Authorization=f"Basic {live.tokens['admin']}") == 401
    auditor = call(live.tokens["auditor"])
    if ep.role is Role.ADMIN:
        assert auditor == 403
    else:
        assert auditor == ep.ok
    assert call(live.tokens["admin"]) == ep.ok

    # Every call, refused or not, is in the audit log with the token's name (never the token).
    records = [json.loads(b) for b in rt.audit.records(before)]
    actors = {(r["actor"]["kind"], r["actor"]["id"], r["outcome"]) for r in records}
    assert ("admin_token", "test-admin", "ok") in actors
    assert ("admin_token", "(unauthenticated)", "denied") in actors
    if ep.role is Role.ADMIN:
        assert ("admin_token", "test-auditor", "denied") in actors
    dump = json.dumps(records)
    for token in live.tokens.values():
        assert token not in dump


def test_token_lifecycle_over_http(live: Live) -> None:
    admin = live.tokens["admin"]
    r = live.request("POST", f"{A}/tokens", admin, json={"name": "ops", "role": "admin",
                                                         "expiresInDays": 2})
    assert r.status_code == 201
    created = r.json()
    assert created["token"].startswith("kmsat_") and created["expiresAt"]
    who = live.request("GET", f"{A}/whoami", created["token"]).json()
    assert who["name"] == "ops" and who["role"] == "admin"
    listed = live.request("GET", f"{A}/tokens", admin).json()["tokens"]
    assert "token" not in json.dumps(listed).replace('"tokens"', "")
    assert live.request("POST", f"{A}/tokens", admin,
                        json={"name": "ops", "role": "admin"}).status_code == 409
    assert live.request("POST", f"{A}/tokens/ops/revoke", admin).status_code == 200
    assert live.request("GET", f"{A}/whoami", created["token"]).status_code == 401
    with live.runtime.engine.connect() as conn:
        stored = conn.execute(select(t.admin_tokens.c.token_hash)
                              .where(t.admin_tokens.c.name == "ops")).scalar_one()
    assert stored != created["token"] and len(stored) == 64


def test_errors_are_typed(live: Live) -> None:
    admin = live.tokens["admin"]
    r = live.request("GET", f"{A}/keys/nope", admin)
    assert r.status_code == 404 and r.json()["errorName"] == "KeyNotFoundException"
    r = live.request("POST", f"{A}/keys", admin, json={"keyId": "x", "surprise": 1})
    assert r.status_code == 400 and r.json()["errorName"] == "ValidationException"
    with live.client(admin) as c:
        r = c.post(f"{A}/keys", content=b"{not json", headers={"content-type":
                                                               "application/json"})
    assert r.status_code == 400 and r.json()["errorName"] == "ValidationException"
    r = live.request("POST", f"{A}/keys/x/destroy", admin, json={"confirm": "y"})
    assert r.status_code == 400
    live.request("POST", f"{A}/keys", admin, json={"keyId": "twice"})
    r = live.request("POST", f"{A}/keys/twice/enable", admin)
    assert r.status_code == 409 and r.json()["errorName"] == "InvalidStateException"


def test_openapi_is_complete(live: Live) -> None:
    doc = live.request("GET", "/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "kmsat_<random>",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"]}
    for path, ops in doc["paths"].items():
        if not path.startswith(A):
            continue
        for op in ops.values():
            assert "422" not in op["responses"], path
            for code in ("400", "401", "403", "500"):
                ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (path, code)
            assert op["security"] == [{"bearerAuth": []}]
            assert op["x-required-role"] in ("admin", "auditor")
    # The references resolve (kms.admin.routes.add_error_schema).
    error_body = doc["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) == {"errorName", "errorMessage"}
