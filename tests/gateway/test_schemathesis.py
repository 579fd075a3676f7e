"""schemathesis against the live gateway's /openapi.json (``gateway serve`` with a real
``kms serve`` and the fake upstream, the fixtures of tests/gateway/conftest.py), run with
the schemathesis CLI as tests/admin/test_schemathesis.py does, bounded in time: no 5xx
caused by the request, and no status, content type, header or body that the published
document does not describe; a method a path lacks is 405, a request without a valid key
401. Once with a valid virtual key, once with a wrong one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from gateway.openapi import OPENAPI
from tests.gateway.conftest import World

#: test cases per operation and phase (the CLI runs without a Hypothesis deadline, and
#: without --max-time, which would make fuzzing repeat until the time is spent): each run
#: takes about 10 s, this file about 45 s with the fixtures, on the shared 2-core machine
MAX_EXAMPLES = 40
#: a hard stop for one run
RUN_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def fuzz_key(world: World) -> str:
    """A tenant of its own (so the other tests' tenants and logs are left alone) in PII
    ``forward`` mode (redaction runs on every generated body), whose first provider key gets
    500 from the upstream (every request fails over)."""
    name = "fuzz-" + uuid.uuid4().hex[:8]
    akid, secret = world.kms.add_credential()
    world.gateway.cli("tenants", "create", name, "--xks-endpoint", world.kms.xks_endpoint,
                      "--key-id", "tenant-b", "--access-key-id", akid, "--pii", "forward",
                      stdin=secret + "\n")
    for api_key in (f"sk-{name}-fail-500", f"sk-{name}-{uuid.uuid4().hex}"):
        world.gateway.cli("provider-keys", "add", name, "--provider", "openai", "--base-url",
                          world.upstream.base_url, stdin=api_key + "\n")
    return world.virtual_key(name)["key"]


def test_the_document_is_served_and_names_exactly_the_routes(world: World) -> None:
    got = httpx.get(world.gateway.url + "/openapi.json", timeout=10)
    assert got.status_code == 200 and got.json() == OPENAPI
    assert set(OPENAPI["paths"]) == {"/healthz", "/v1/models", "/v1/chat/completions"}


def test_a_method_the_path_lacks_is_405_with_allow(world: World) -> None:
    """Found by schemathesis (unsupported_method): these were 400 ``invalid_request``."""
    for method, path, allowed in (("DELETE", "/v1/chat/completions", "POST"),
                                  ("TRACE", "/v1/models", "GET"),
                                  ("POST", "/healthz", "GET")):
        got = httpx.request(method, world.gateway.url + path, timeout=10)
        assert got.status_code == 405, (method, path, got.text)
        assert allowed in got.headers["allow"].split(", ")
        assert got.json() == {"error": {"message": "Method not allowed for this path.",
                                        "type": "invalid_request_error",
                                        "code": "method_not_allowed", "param": None}}
    unknown = httpx.get(world.gateway.url + "/v1/nothing-here", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("who", ["valid-key", "wrong-key"])
def test_gateway_conforms_to_its_openapi(world: World, fuzz_key: str, who: str,
                                         tmp_path: Path) -> None:
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.fail("schemathesis is not installed: run `make install` (dev extras)")
    key = fuzz_key if who == "valid-key" else "gwk-prod-" + "A" * 43
    serve_log = world.gateway.home / "serve.log"
    log_before = serve_log.stat().st_size
    cmd = [
        st, "run", f"{world.gateway.url}/openapi.json",
        "--checks", "not_a_server_error,response_schema_conformance,"
                    "status_code_conformance,content_type_conformance,"
                    "response_headers_conformance,unsupported_method,ignored_auth",
        "--header", f"Authorization: Bearer {key}",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", "7",
        "--workers", "1",
        "--request-timeout", "20",
        "--no-color",
        "--report-dir", str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                         cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    with serve_log.open("rb") as f:
        f.seek(log_before)
        assert b"internal_error" not in f.read()
