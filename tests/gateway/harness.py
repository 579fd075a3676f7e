"""A real gateway for end-to-end tests: the ``gateway`` CLI and ``gateway serve`` in a
subprocess, in a fresh GATEWAY_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.server import ROOT, free_port

GATEWAY = str(Path(sys.executable).parent / "gateway")


class GatewayProcess:
    def __init__(self, *, database_url: str | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="gateway-home-"))
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        self.env["GATEWAY_HOME"] = str(self.home)
        if database_url:
            self.env["GATEWAY_DATABASE_URL"] = database_url
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.cli("init")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.home / "gateway.db"

    def cli(self, *args: str, stdin: str = "", check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([GATEWAY, *args], env=self.env, input=stdin, text=True,
                                capture_output=True, cwd=ROOT, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"gateway {' '.join(args)} failed: {result.stderr}")
        return result

    def cli_json(self, *args: str, stdin: str = "") -> Any:
        return json.loads(self.cli(*args, "--json", stdin=stdin).stdout)

    def start(self) -> GatewayProcess:
        log = open(self.home / "serve.log", "ab")  # noqa: SIM115 - lives with the server
        self.proc = subprocess.Popen([GATEWAY, "serve", "--port", str(self.port)],
                                     env=self.env, cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("gateway serve exited:\n" + self.log())
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("gateway serve did not start:\n" + self.log())

    def log(self) -> str:
        path = self.home / "serve.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
