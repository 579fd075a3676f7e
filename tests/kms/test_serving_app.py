"""``kms serve``'s ASGI application (kms/serving.py), over real HTTP on loopback with a real
SoftHSM token: XKS is served from the first request, before the FastAPI application of the
other routes is built (it is built on a thread: held back here); other requests wait for
it, then get exactly what create_app would answer."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import httpx
import pytest

from kms.app import create_api
from kms.audit.event import cli_actor
from kms.client import XksClient
from kms.keys.model import KeyUsage
from kms.runtime import Runtime
from kms.serving import AppState, ServingApp
from tests.kms.conftest import RuntimeFactory
from tests.server import uvicorn_in_thread


class Held:
    """A build that waits until released (and records the thread it ran on)."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.fail = fail
        self.thread: str | None = None

    def __call__(self, state: AppState) -> Any:
        self.thread = threading.current_thread().name
        assert self.release.wait(30)
        if self.fail:
            raise RuntimeError("build failed")
        return create_api(state)


@pytest.fixture()
def runtime(make_runtime: RuntimeFactory, sqlite_url: str) -> Runtime:
    rt = make_runtime(sqlite_url)
    rt.keys.create_key("k", frozenset({KeyUsage.ENCRYPT, KeyUsage.DECRYPT}), cli_actor())
    return rt


def _client(rt: Runtime, base: str) -> XksClient:
    akid, secret = rt.credentials.add("default", None, None, cli_actor())
    prefix = rt.registry.get_store("default").uri_prefix
    return XksClient(f"{base}/{prefix}", akid, secret.reveal(), timeout=5.0)


def test_xks_is_served_before_the_rest_is_built_which_then_answers(runtime: Runtime) -> None:
    build = Held()
    app = ServingApp(AppState(runtime), build, background=False)
    with uvicorn_in_thread(app) as base:
        xks = _client(runtime, base)
        ct = xks.encrypt("k", b"secret", b"aad")  # served with the build held back
        assert xks.decrypt("k", ct, b"aad") == b"secret"
        assert build.thread == "api-build"
        answers: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: answers.append(httpx.get(base + "/healthz", timeout=30)))
        waiting.start()
        time.sleep(0.3)
        assert answers == []  # waits for the build, is not refused
        build.release.set()
        waiting.join(timeout=30)
        assert answers[0].status_code == 200 and answers[0].json() == {"status": "ok"}
        ready = httpx.get(base + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["audit"]["size"] >= 2
        unknown = httpx.get(base + "/nope", timeout=10)
        assert unknown.status_code == 404
        assert unknown.json()["errorName"] == "InvalidUriPathException"
        admin = httpx.get(base + "/admin/v1/keys", timeout=10)
        assert admin.status_code == 401
        assert admin.json()["errorName"] == "AuthenticationFailedException"
        assert "ErrorBody" in httpx.get(base + "/openapi.json").json()["components"]["schemas"]


def test_a_failed_build_fails_the_other_routes_not_xks(runtime: Runtime) -> None:
    build = Held(fail=True)
    build.release.set()
    app = ServingApp(AppState(runtime), build, background=False)
    with uvicorn_in_thread(app) as base:
        xks = _client(runtime, base)
        assert xks.decrypt("k", xks.encrypt("k", b"x", b"a"), b"a") == b"x"
        r = httpx.get(base + "/healthz", timeout=10)
        assert r.status_code == 500
        assert r.json() == {"errorName": "InternalException", "errorMessage": "internal error"}


def test_with_freeze_gc_the_heap_is_frozen_after_the_start_and_the_build(runtime: Runtime) -> None:
    """``kms serve`` (freeze_gc): what the start and the build made is out of the cyclic
    collector's reach (full collections under load took 44-79 ms scanning it), and the
    collector, off for the start and the build, is on again after them. The pytest process's heap is
    unfrozen afterwards."""
    build = Held()
    app = ServingApp(AppState(runtime), build, background=False, freeze_gc=True)
    gc.disable()  # as kms serve does for its start
    try:
        with uvicorn_in_thread(app) as base:
            started = gc.get_freeze_count()  # (the held build has the collector off)
            assert started > 0
            xks = _client(runtime, base)
            assert xks.decrypt("k", xks.encrypt("k", b"x", b"a"), b"a") == b"x"
            build.release.set()
            assert httpx.get(base + "/healthz", timeout=30).status_code == 200
            assert gc.isenabled()
            assert gc.get_freeze_count() > started  # the build's objects too
    finally:
        gc.unfreeze()
        gc.enable()
