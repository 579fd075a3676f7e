"""The production topology without Docker: one PostgreSQL, one SoftHSM token directory, N
``kms serve`` replicas sharing both, and a small TCP load balancer in front of them.

This is what ``docker-compose.yml`` runs, minus the containers: the same environment
variables (``SOFTHSM2_CONF``, ``KMS_PKCS11_PIN_FILE``, ``KMS_DATABASE_URL``), one ``kms init``
against the shared state (the compose file's one-shot ``kms-init``), then one ``kms serve``
per replica, each with its own ``KMS_HOME``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from pathlib import Path

from tests.conftest import TEST_PIN, create_token
from tests.server import KMS, ROOT, KmsServer, free_port  # noqa: F401 - KMS re-exported

TOKEN_LABEL = "kms"


class SharedState:
    """What every replica shares: the database URL and the token directory with its PIN."""

    def __init__(self, database_url: str, *, uri_prefix: str = "xks",
                 fleet_size: int = 2) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kms-shared-"))
        # softhsm-setup/create-token.sh, as the compose file's `softhsm-setup` service runs it
        self.softhsm_conf = create_token(self.dir / "softhsm", TOKEN_LABEL)
        self.pin_file = self.dir / "pkcs11.pin"
        self.pin_file.write_text(TEST_PIN + "\n")
        self.pin_file.chmod(0o600)
        self.database_url = database_url
        self.uri_prefix = uri_prefix
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("KMS_", "SOFTHSM", "PROMETHEUS_"))}
        self.env.update({
            "KMS_DATABASE_URL": database_url,
            "SOFTHSM2_CONF": str(self.softhsm_conf),
            "KMS_PKCS11_TOKEN_LABEL": TOKEN_LABEL,
            "KMS_PKCS11_PIN_FILE": str(self.pin_file),
            "KMS_CHECKPOINT_INTERVAL": "2",
            "KMS_FLEET_SIZE": str(fleet_size),
            "KMS_AUDIT_ORIGIN": "kms.test/deploy-audit",
        })

    def replica(self, name: str) -> Replica:
        return Replica(self, name)


class Replica(KmsServer):
    """One ``kms serve`` on the shared state, with its own KMS_HOME and port. Unlike
    :class:`KmsServer` it does not run ``kms init``: the state is initialised once."""

    def __init__(self, shared: SharedState, name: str) -> None:
        self.name = name
        self.home = shared.dir / f"home-{name}"
        self.home.mkdir(mode=0o700)
        self.port = free_port()
        self.env = dict(shared.env, KMS_HOME=str(self.home))
        self.uri_prefix = shared.uri_prefix
        self.proc = None


class LoadBalancer:
    """Round-robin TCP proxy over the replicas, one backend per client connection.

    A backend that refuses the connection is skipped (the next one is tried), which is the
    passive health check of nginx/HAProxy/an NLB in its simplest form. Bytes are passed
    through untouched, so Host, path and body reach the replica exactly as signed (SigV4).
    """

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.connections = [0] * len(backends)  # connections handed to each backend
        self.active = [0] * len(backends)
        self.skipped = 0  # connection attempts to a dead backend
        self._next = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _pick(self) -> tuple[int, socket.socket] | None:
        for _ in range(len(self.backends)):
            with self._lock:
                i = self._next
                self._next = (self._next + 1) % len(self.backends)
            try:
                return i, socket.create_connection(self.backends[i], timeout=0.5)
            except OSError:
                with self._lock:
                    self.skipped += 1
        return None

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        picked = self._pick()
        if picked is None:
            client.close()
            return
        i, upstream = picked
        upstream.settimeout(None)
        with self._lock:
            self.connections[i] += 1
            self.active[i] += 1
        done = threading.Event()

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                done.set()

        threads = [threading.Thread(target=pipe, args=(a, b), daemon=True)
                   for a, b in ((upstream, client), (client, upstream))]
        for t in threads:
            t.start()
        done.wait()
        # one side closed or reset: shut both, so the client sees the backend's death at once
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(timeout=5)
        for s in (client, upstream):
            s.close()
        with self._lock:
            self.active[i] -= 1

    def close(self) -> None:
        self._closed = True
        self._sock.close()


__all__ = ["ROOT", "LoadBalancer", "Replica", "SharedState"]
