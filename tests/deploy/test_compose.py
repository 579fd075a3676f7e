"""docker-compose.yml, checked without a Docker engine: its topology (parsed with PyYAML),
``docker-compose config`` when a compose client is installed, the Dockerfile and entrypoint,
and deploy/gen-secrets.sh (which makes the secrets and certificates the file mounts)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
REPLICAS = ("kms-1", "kms-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes (short syntax)."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        out[target] = source
    return out


def _secrets(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's secrets."""
    out = {}
    for s in service.get("secrets", []):
        if isinstance(s, str):
            out[s] = s
        else:
            out[s.get("target", s["source"])] = s["source"]
    return out


def _db_of(url: str) -> tuple[str, str]:
    m = re.fullmatch(r"postgresql\+psycopg://(\w+)@([\w-]+):5432/(\w+)", url)
    assert m, url
    assert m.group(2) == "postgres"
    return m.group(1), m.group(3)


def test_services_and_their_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "softhsm-setup", "kms-init", *REPLICAS, "xks-proxy",
                             "gateway"}
    assert services["softhsm-setup"]["command"] == ["softhsm-setup"]
    assert services["kms-init"]["command"] == ["kms-init"]
    assert services["kms-init"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "softhsm-setup": {"condition": "service_completed_successfully"}}
    for name in REPLICAS:
        s = services[name]
        assert s["command"] == ["kms-serve"]
        # `kms init` ran once before any replica starts (no init race between replicas)
        assert s["depends_on"]["kms-init"] == {"condition": "service_completed_successfully"}
        assert s["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert "/readyz" in " ".join(s["healthcheck"]["test"])
    proxy_deps = services["xks-proxy"]["depends_on"]
    assert proxy_deps == {r: {"condition": "service_healthy"} for r in REPLICAS}
    assert services["gateway"]["depends_on"]["xks-proxy"] == {"condition": "service_healthy"}
    for name in ("postgres", *REPLICAS, "xks-proxy", "gateway"):
        assert services[name].get("healthcheck"), name


def test_replicas_share_database_and_token(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kms_like = ("kms-init", *REPLICAS)
    envs = {n: services[n]["environment"] for n in kms_like}
    for key in ("KMS_DATABASE_URL", "SOFTHSM2_CONF", "KMS_PKCS11_TOKEN_LABEL",
                "KMS_PKCS11_PIN_FILE", "KMS_PKCS11_MODULE", "KMS_AUDIT_ORIGIN"):
        assert len({e[key] for e in envs.values()}) == 1, key
    env = envs["kms-1"]
    assert env["KMS_FLEET_SIZE"] == str(len(REPLICAS))
    assert _db_of(env["KMS_DATABASE_URL"]) == ("kms", "kms")
    conf_dir = str(Path(env["SOFTHSM2_CONF"]).parent)
    token_volumes = {_volumes(services[n]).get(conf_dir) for n in ("softhsm-setup", *kms_like)}
    assert token_volumes == {"softhsm"}  # one named volume, same path everywhere
    homes = [_volumes(services[n])[env["KMS_HOME"]] for n in REPLICAS]
    assert len(set(homes)) == len(REPLICAS)  # each replica its own KMS_HOME
    # the PIN the token was made with is the PIN the replicas log in with
    pins = {_secrets(services[n])["pkcs11_pin"] for n in ("softhsm-setup", *kms_like)}
    assert pins == {"pkcs11_pin"}
    assert set(services["softhsm-setup"]["secrets"]) == {"pkcs11_pin", "so_pin"}
    assert services["softhsm-setup"]["environment"]["KMS_PKCS11_TOKEN_LABEL"] == \
        env["KMS_PKCS11_TOKEN_LABEL"]
    for n in kms_like:
        assert _secrets(services[n])["pgpass"] == "kms_pgpass"


def test_gateway_has_its_own_database_and_uses_the_tls_proxy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gw = services["gateway"]
    user, db = _db_of(gw["environment"]["GATEWAY_DATABASE_URL"])
    assert (user, db) == ("gateway", "gateway")
    assert _secrets(gw)["pgpass"] == "gateway_pgpass"
    assert _volumes(gw)["/var/lib/gateway"] == "gateway-home"
    assert "SSL_CERT_FILE" not in gw["environment"]  # it would drop the system CAs
    ca = gw["environment"]["CMK_EXTRA_CA_FILE"]
    assert _volumes(gw)[ca] == "./deploy/certs/ca.crt"
    init = (DEPLOY / "postgres" / "10-gateway-database.sh").read_text()
    assert "CREATE DATABASE gateway OWNER gateway" in init
    pg = services["postgres"]
    assert _volumes(pg)["/docker-entrypoint-initdb.d/10-gateway-database.sh"] == \
        "./deploy/postgres/10-gateway-database.sh"
    assert "gateway_db_password" in pg["secrets"]


def test_tls_proxy_forwards_unchanged_to_both_replicas(compose: dict[str, Any]) -> None:
    proxy = compose["services"]["xks-proxy"]
    vols = _volumes(proxy)
    conf = (ROOT / vols["/etc/nginx/conf.d/default.conf"].removeprefix("./")).read_text()
    assert vols["/etc/nginx/certs"] == "./deploy/certs"
    for r in REPLICAS:
        assert re.search(rf"^\s*server {r}:8000\b", conf, re.M), r
    assert re.search(r"^\s*listen 443 ssl;", conf, re.M)
    assert "ssl_certificate     /etc/nginx/certs/xks.crt;" in conf
    assert "proxy_set_header Host $http_host;" in conf  # SigV4 signs Host with its port
    # no URI part on proxy_pass: the path is passed byte for byte
    assert set(re.findall(r"proxy_pass (\S+);", conf)) == {"http://kms_replicas"}
    # only the XKS API and /healthz are published; the admin API and /metrics are not
    assert re.findall(r"^\s*location (.+?) \{", conf, re.M) == [
        "~ ^/.+/kms/xks/v1/", "= /healthz", "/"]
    assert any(p.endswith(":443") for p in proxy["ports"])


def test_every_referenced_file_is_made_by_gen_secrets_or_committed(
        compose: dict[str, Any]) -> None:
    script = (DEPLOY / "gen-secrets.sh").read_text()
    for name, spec in compose["secrets"].items():
        path = spec["file"]
        assert path.startswith("./deploy/secrets/"), path
        assert f"secret {name} " in script or f'"$here/secrets/{name}"' in script, name
    for service in compose["services"].values():
        for target, source in _volumes(service).items():
            if source.startswith("./deploy/certs"):
                continue  # made by gen-secrets.sh (checked below)
            if source.startswith("./"):
                assert (ROOT / source).exists(), (source, target)


def test_dockerfile_and_entrypoint(compose: dict[str, Any]) -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM \S+bookworm", dockerfile, re.M)  # Debian 12
    assert re.search(r"apt-get install .*softhsm2", dockerfile)
    assert "pip install --no-cache-dir ." in dockerfile
    for path in ("hsm", "kms", "gateway", "softhsm-setup", "pyproject.toml"):
        assert re.search(rf"^COPY {re.escape(path)} ", dockerfile, re.M), path
    entry = DEPLOY / "entrypoint.sh"
    subprocess.run(["sh", "-n", str(entry)], check=True)
    text = entry.read_text()
    assert 'export SSL_CERT_FILE="$private/ca-bundle.pem"' in text
    assert "/etc/ssl/certs/ca-certificates.crt" in text and "ca-certificates" in dockerfile
    commands = {s["command"][0] for s in compose["services"].values() if "command" in s}
    for command in commands:
        assert f"\n  {command})" in text, command
    for service in compose["services"].values():
        build = service.get("build")
        if build:
            assert build == {"context": ".", "dockerfile": "deploy/Dockerfile"}


def test_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    """The real compose client's validation (Debian's docker-compose, or `docker compose`),
    which needs no engine for `config`."""
    if shutil.which("docker-compose"):
        cmd = ["docker-compose"]
    elif shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True).returncode == 0:
        cmd = ["docker", "compose"]
    else:
        pytest.skip("no compose client (apt-get install docker-compose)")
    out = subprocess.run([*cmd, "-f", str(COMPOSE), "config"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) >= {"postgres", "softhsm-setup", "kms-init", *REPLICAS,
                                         "xks-proxy", "gateway"}
    env = resolved["services"]["kms-2"]["environment"]
    assert env["KMS_DATABASE_URL"] == "postgresql+psycopg://kms@postgres:5432/kms"


def test_gen_secrets_makes_secrets_and_a_certificate_for_the_proxy(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copy(DEPLOY / "gen-secrets.sh", deploy)
    env = {"PATH": "/usr/bin:/bin", "XKS_HOSTNAME": "xks.test.example"}
    for _ in range(2):  # idempotent: the second run keeps everything
        subprocess.run([str(deploy / "gen-secrets.sh")], check=True, env=env,
                       capture_output=True)
        if _ == 0:
            first = {p.name: p.read_bytes() for p in (deploy / "secrets").iterdir()}
    assert {p.name: p.read_bytes() for p in (deploy / "secrets").iterdir()} == first
    assert set(first) == {"pkcs11_pin", "so_pin", "kms_db_password", "gateway_db_password",
                          "kms_pgpass", "gateway_pgpass"}
    assert (deploy / "secrets").stat().st_mode & 0o077 == 0
    assert (deploy / "secrets" / "pkcs11_pin").stat().st_mode & 0o077 == 0
    password = first["kms_db_password"].decode().strip()
    assert len(password) >= 20
    assert first["kms_pgpass"].decode() == f"postgres:5432:kms:kms:{password}\n"
    cert = x509.load_pem_x509_certificate((deploy / "certs" / "xks.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"xks.test.example", "xks-proxy",
                                                           "localhost"}
