"""XksHandler.begin/complete: a request checked up to its HSM call, the call made
elsewhere (the HSM worker process), then answered. The kill switch holds across the gap:
a key revoked after the check and before the answer is refused."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from kms.audit.event import cli_actor
from kms.bench.xks_load import encrypt_body, presign
from kms.keys.model import KeyUsage
from kms.runtime import Runtime
from kms.xks.credentials import Secret
from kms.xks.handler import HsmStep, XksHandler, XksRequest
from tests.kms.conftest import RuntimeFactory


def _handler_and_request(rt: Runtime) -> tuple[XksHandler, XksRequest]:
    rt.keys.create_key("k", frozenset({KeyUsage.ENCRYPT, KeyUsage.DECRYPT}), cli_actor())
    secret = Secret(base64.b64encode(os.urandom(32)).decode("ascii"))
    akid, _ = rt.credentials.add("default", None, secret, cli_actor())
    prefix = rt.registry.get_store("default").uri_prefix
    url = f"http://127.0.0.1:8000/{prefix}/kms/xks/v1/keys/k/encrypt"
    p = presign(url, akid, secret.reveal(), [encrypt_body(os.urandom(32), "k")])[0]
    headers = [("host", "127.0.0.1:8000")] + [(k.lower(), v) for k, v in p.headers.items()]
    handler = XksHandler(rt.keys, rt.cache, rt.credentials, rt.hsm, rt.clock)
    return handler, XksRequest(p.method, p.path, "", headers, p.body, "10.0.0.1")


@pytest.fixture()
def runtime(make_runtime: RuntimeFactory, sqlite_url: str) -> Runtime:
    return make_runtime(sqlite_url)


def test_begin_then_complete_answers_like_process(runtime: Runtime) -> None:
    handler, req = _handler_and_request(runtime)
    step = handler.begin(req)
    assert isinstance(step, HsmStep)
    resp = handler.complete(step, handler.make_call(step))
    assert resp.status == 200, resp.body
    assert resp.event is not None and resp.event.key_version == 1
    body = json.loads(resp.body)
    assert base64.b64decode(body["ciphertextMetadata"])  # the version it was made with


def test_a_key_revoked_between_the_check_and_the_answer_is_refused(
        runtime: Runtime, tmp_path: Path) -> None:
    handler, req = _handler_and_request(runtime)
    step = handler.begin(req)
    assert isinstance(step, HsmStep)
    outcome = handler.make_call(step)  # the HSM answered...
    runtime.keys.revoke("k", "incident", cli_actor())  # ...and the revoke returned first
    resp = handler.complete(step, outcome)
    assert resp.status == 400
    assert json.loads(resp.body)["errorName"] == "InvalidStateException"
    assert resp.event is not None and resp.event.error == "InvalidStateException"
