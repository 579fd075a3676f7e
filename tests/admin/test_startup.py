"""``create_app`` leaves no one-off work for the first requests (which run on the event
loop that also serves XKS: whatever the first request pays, every request waiting behind
it on the loop pays too)."""

from __future__ import annotations

import inspect
from typing import Any

import fastapi.routing
import pytest
from starlette.testclient import TestClient

from kms.app import create_api, create_app, endpoints
from kms.serving import AppState
from tests.kms.conftest import RuntimeFactory, make_runtime, sqlite_url  # noqa: F401


def test_routes_are_built_before_the_first_request(
        make_runtime: RuntimeFactory, sqlite_url: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI 0.16x builds an included router's routes when a request first reaches it
    (~0.16 s on this VM: the first /healthz after a start took 162-169 ms, and XKS requests
    waited behind it); create_app builds them instead, and a first request builds none."""
    context = getattr(fastapi.routing, "_EffectiveRouteContext", None)
    if context is None or not hasattr(context, "from_api_route"):
        pytest.skip("this FastAPI does not build included routes lazily")
    built: list[str] = []
    original = context.from_api_route

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append("route")
        return original(*args, **kwargs)

    monkeypatch.setattr(context, "from_api_route", counting)
    app = create_app(make_runtime(sqlite_url), background=False)
    assert built, "create_app built no route"
    at_start = len(built)
    client = TestClient(app)  # no lifespan: only what a request itself does
    assert client.get("/healthz").status_code == 200
    assert client.get("/admin/v1/keys").status_code in (401, 403)
    assert len(built) == at_start, "a request built routes"


@pytest.mark.parametrize("build", ["create_app", "create_api"])
def test_every_endpoints_source_context_is_read_before_the_first_request(
        build: str, make_runtime: RuntimeFactory, sqlite_url: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI (0.16x) reads an endpoint's source lines on its first request (18-64 ms on the
    loop for the first endpoint of a file); create_app and create_api read them first."""
    if not hasattr(fastapi.routing, "_endpoint_context_cache"):
        pytest.skip("this FastAPI keeps no endpoint context cache")
    cache: dict[int, Any] = {}
    monkeypatch.setattr(fastapi.routing, "_endpoint_context_cache", cache)
    rt = make_runtime(sqlite_url)
    app = (create_app(rt, background=False) if build == "create_app"
           else create_api(AppState(rt)))
    found = list(endpoints(app.router.routes))
    assert len(found) > 30  # the admin API, /metrics, /healthz, /readyz
    assert {id(e) for e in found} <= set(cache)
    read: list[object] = []

    def getsourcelines(f: object) -> tuple[list[str], int]:
        read.append(f)
        return [], 0

    monkeypatch.setattr(inspect, "getsourcelines", getsourcelines)
    client = TestClient(app)
    assert client.get("/healthz").status_code == 200
    assert client.get("/admin/v1/keys").status_code in (401, 403)
    assert read == [], "a request read source lines"
