"""``create_app`` leaves no one-off work for the first requests (which run on the event
loop that also serves XKS: whatever the first request pays, every request waiting behind
it on the loop pays too)."""

from __future__ import annotations

from typing import Any

import fastapi.routing
import pytest
from starlette.testclient import TestClient

from kms.app import create_app
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
