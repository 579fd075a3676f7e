"""Servers the benchmark starts: ``kms serve`` in a fresh KMS_HOME, and the echo baseline."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


class KmsProcess:
    """``kms init`` + keys + a credential in a temp home, then ``kms serve`` (one worker)."""

    def __init__(self, keys: list[str], env: dict[str, str] | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="kms-bench-"))
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("SOFTHSM2_CONF", "KMS_PKCS11_PIN", "KMS_DATABASE_URL")}
        self.env.update(env or {})
        self.env["KMS_HOME"] = str(self.home)
        self.port = free_port()
        self.cli("init")
        for key in keys:
            self.cli("keys", "create", key)
        import json

        cred = json.loads(self.cli("xks", "credentials", "add", "default", "--json"))
        self.akid, self.secret = cred["accessKeyId"], cred["secret"]
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        out = subprocess.run([str(BIN / "kms"), *args], env=self.env, capture_output=True,
                             text=True, check=True, stdin=subprocess.DEVNULL)
        return out.stdout

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([str(BIN / "kms"), "serve", "--port", str(self.port)],
                                     env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_http(self.url + "/healthz", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)


class ModuleServer:
    """``python -m MODULE PORT`` on a free loopback port, started now and answering
    ``ready_path``; killed again if it does not come up."""

    def __init__(self, module: str, ready_path: str,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", module, str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(self.url + ready_path, self.proc)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class EchoProcess(ModuleServer):
    def __init__(self) -> None:
        super().__init__("kms.bench.echo_app", "/docs")
