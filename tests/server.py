"""A real ``kms serve`` in a subprocess, set up through the real CLI, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
KMS = str(Path(sys.executable).parent / "kms")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KmsServer:
    """``kms init`` in a fresh KMS_HOME (own SoftHSM token), then ``kms serve``."""

    def __init__(self, *, uri_prefix: str = "xks", home: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.home = home or Path(tempfile.mkdtemp(prefix="kms-home-"))
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("SOFTHSM2_CONF", "KMS_PKCS11_PIN", "KMS_DATABASE_URL")}
        self.env.update({"KMS_HOME": str(self.home), "KMS_CHECKPOINT_INTERVAL": "2"})
        self.env.update(extra_env or {})
        self.uri_prefix = uri_prefix
        self.cli("init", "--uri-prefix", uri_prefix)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def xks_endpoint(self) -> str:
        return f"{self.url}/{self.uri_prefix}"

    def cli(self, *args: str, stdin: str = "",
            check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([KMS, *args], env=self.env, input=stdin, text=True,
                                capture_output=True, cwd=ROOT, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"kms {' '.join(args)} failed: {result.stderr}")
        return result

    def cli_json(self, *args: str, stdin: str = "") -> Any:
        return json.loads(self.cli(*args, "--json", stdin=stdin).stdout)

    def add_credential(self, store: str = "default") -> tuple[str, str]:
        out = self.cli_json("xks", "credentials", "add", store)
        return out["accessKeyId"], out["secret"]

    def start(self, *extra: str, wait: bool = True) -> KmsServer:
        """Spawn ``kms serve``; with ``wait``, return once /healthz answers (which is a
        little after XKS is served: kms/serving.py)."""
        log = open(self.home / "serve.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen([KMS, "serve", "--port", str(self.port), *extra],
                                     env=self.env, cwd=ROOT, stdout=log, stderr=log)
        if wait:
            self.wait_ready()
        return self

    def exited(self) -> str | None:
        """The log's tail once the server process has exited; None while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return self.log()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("kms serve exited:\n" + self.log())
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("kms serve did not start:\n" + self.log())

    def log(self) -> str:
        path = self.home / "serve.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def flip_key(self, key: str, state: str, reason: str) -> tuple[str, str]:
        """An operator's change through the CLI: revoke ``key`` if ``state`` (what the test
        expects it to be) is ENABLED, else enable it. Returns the state now expected and the
        state the CLI shows (a revoked key shows as DISABLED)."""
        if state == "ENABLED":
            self.cli("keys", "revoke", "--reason", reason, key)
            state = "REVOKED"
        else:
            self.cli("keys", "enable", key)
            state = "ENABLED"
        return state, self.cli_json("keys", "show", key)["state"]


@contextlib.contextmanager
def uvicorn_in_thread(app: Any) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn (lifespan on) on an ephemeral loopback port, in a
    thread of this process; yields its base URL, stops it on exit."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                            access_log=False, lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        if thread.is_alive():
            raise RuntimeError("uvicorn did not stop (its lifespan's shut-down hangs)")


# Issue 9 item 3: a restart serves again within RESTART_TARGET_S. The kill -9 tests enforce
# it on the median of their ten restarts (2-core VM, the test's own load running: medians
# 0.70-1.23 s measured 2026-11-29, every restart under 1.4 s; 2.1-2.3 s before kms serve
# started its writer process early and deferred FastAPI, kms/serving.py). The max is a
# bound on one slow start on a shared CI machine, not the target.
RESTART_TARGET_S = 2.0
RESTART_MEDIAN_LIMIT_S = RESTART_TARGET_S
RESTART_MAX_LIMIT_S = 4.0


def seconds_until_served(client: Any, start: float, exited: Any) -> float:
    """Seconds from ``start`` until ``client`` (an XksClient) gets a signed encrypt of key
    ``k`` answered; ``exited()`` gives the server's log tail once its process has died (the
    wait then fails with it), else None. Gives up after 30 s."""
    from kms.errors import KmsError

    while True:
        try:
            client.encrypt("k", b"ping", b"aad")
            return time.monotonic() - start
        except KmsError:
            log = exited()
            if log is not None:
                raise AssertionError(log) from None
            if time.monotonic() - start > 30:
                raise AssertionError("the server did not serve within 30 s") from None
            time.sleep(0.02)
