"""The compose file's TLS proxy for real: nginx with deploy/nginx/xks.conf (only the
backend addresses, the listen address and the certificate directory changed) in front of
the two replicas, with a certificate from deploy/gen-secrets.sh. SigV4 survives it (Host,
path and body unchanged), both replicas get requests, the admin API is not published, and
a killed replica is skipped. Skipped when nginx is not installed (apt-get install nginx-light).
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kms.client import XksClient
from tests.deploy.conftest import KEY, Cluster
from tests.server import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEPLOY = Path(__file__).resolve().parent.parent.parent / "deploy"


@pytest.fixture()
def nginx(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                       else None)
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copy(DEPLOY / "gen-secrets.sh", deploy)
    subprocess.run([str(deploy / "gen-secrets.sh")], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "XKS_HOSTNAME": "localhost"})
    port = free_port()
    conf = (DEPLOY / "nginx" / "xks.conf").read_text()
    for i, r in enumerate(cluster.replicas, 1):
        conf, n = re.subn(rf"server kms-{i}:8000", f"server 127.0.0.1:{r.port}", conf)
        assert n == 1
    conf, n = re.subn(r"listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;", conf)
    assert n == 1
    conf = conf.replace("/etc/nginx/certs/", f"{deploy / 'certs'}/")
    run = tmp_path / "nginx"
    run.mkdir()
    run.chmod(0o777)
    (run / "xks.conf").write_text(conf)
    temp = " ".join(f"{kind}_temp_path {run}/{kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (run / "nginx.conf").write_text(
        f"daemon off; pid {run}/nginx.pid; error_log {run}/error.log warn;\n"
        f"events {{}}\nhttp {{ access_log off; {temp} include {run}/xks.conf; }}\n")
    test = subprocess.run([binary, "-t", "-p", str(run), "-c", str(run / "nginx.conf")],
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    proc = subprocess.Popen([binary, "-p", str(run), "-c", str(run / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        ca = deploy / "certs" / "ca.crt"
        while True:
            try:
                if httpx.get(f"https://localhost:{port}/healthz", verify=_trust(ca),
                             timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (run / "error.log").read_text()
            time.sleep(0.1)
        yield f"https://localhost:{port}", ca
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _xks_calls(replica_url: str) -> float:
    """XKS calls a replica answered (any operation), from its /metrics."""
    text = httpx.get(replica_url + "/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(
        r'^kms_requests_total\{endpoint="xks\.\w+",outcome="ok"\} (\S+)$', text, re.M))


def test_xks_through_the_tls_proxy(cluster: Cluster, nginx: tuple[str, Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    base, ca = nginx
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # how the compose file's gateway trusts it
    client = XksClient(f"{base}/{cluster.shared.uri_prefix}", cluster.access_key_id,
                       cluster.secret)
    before = [_xks_calls(r.url) for r in cluster.replicas]
    try:
        assert client.health()
        assert client.metadata(KEY)["keyStatus"] == "ENABLED"
        for i in range(40):
            ct = client.encrypt(KEY, f"m{i}".encode(), aad=b"tls")
            assert client.decrypt(KEY, ct, aad=b"tls") == f"m{i}".encode()
        after = [_xks_calls(r.url) for r in cluster.replicas]
        served = [a - b for a, b in zip(after, before, strict=True)]
        assert sum(served) >= 82 and all(s > 0 for s in served), served

        # the admin API and /metrics are not published through the proxy
        for path in ("/admin/v1/keys", "/metrics", "/openapi.json"):
            assert httpx.get(base + path, verify=_trust(ca), timeout=5).status_code == 404

        # one replica dies: nginx skips it, every call still succeeds
        victim = cluster.replicas[1]
        victim.kill()
        failures = 0
        t0 = time.monotonic()
        for i in range(40):
            try:
                client.encrypt(KEY, f"after-kill-{i}".encode())
            except Exception:
                failures += 1
        elapsed = time.monotonic() - t0
        print(f"\nnginx TLS proxy: XKS calls per replica {served}; with {victim.name} killed, "
              f"{40 - failures}/40 encrypts succeeded in {elapsed * 1000:.0f} ms")
        assert failures == 0
    finally:
        client.close()
        victim = cluster.replicas[1]
        if victim.proc is not None and victim.proc.poll() is not None:
            victim.start()
