"""The reference for ``xks_vs_echo``: the least an XKS encrypt endpoint can do in Python on
``kms serve``'s server stack, served and loaded exactly as ``kms serve`` is in the bench.

Per request it reads the body, verifies the SigV4 signature (canonical request, string to
sign, HMAC with a cached signing key, constant-time compare), parses the JSON, makes the
SoftHSM AES-256-GCM encrypt of the plaintext under the AAD (``Pkcs11Hsm.encrypt``, the
HSM layer's call, as the service makes it), appends a durable audit record
(``AuditLog.append_async`` and its writer process, as ``kms serve``) and renders the answer.
It does nothing else: no check of the request's fields, the path, the clock skew or the
key's state, no authorization rules, no metrics, no request id or log line, no error
bodies. It is not a service: it exists so that each bench run measures, beside ours, how
fast the mandatory work alone goes on that machine (``xks_bare``, ``xks_bare_vs_echo``).

``python -m kms.bench.bare_xks PORT`` runs the server; its token directory, PIN, access
key id and secret come from the environment :class:`BareProcess` sets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from starlette.types import Receive, Scope, Send

from kms.bench.processes import ModuleServer

TOKEN_LABEL = "bare-xks"  # noqa: S105 - a token's label
KEY_LABEL = "bare-key"
_ENV_PIN = "BARE_XKS_PIN"
_ENV_AKID = "BARE_XKS_AKID"
_ENV_SECRET = "BARE_XKS_SECRET"  # noqa: S105 - the name of a variable, not a secret
_ENV_DB = "BARE_XKS_DATABASE_URL"


class BareProcess(ModuleServer):
    """A throwaway SoftHSM token and a SQLite audit log in a temp directory, and the bare
    server on them."""

    def __init__(self, akid: str, secret: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kms-bench-bare-"))
        try:
            (self.dir / "tokens").mkdir()
            conf = self.dir / "softhsm2.conf"
            conf.write_text(f"directories.tokendir = {self.dir}/tokens\n"
                            "objectstore.backend = file\nlog.level = ERROR\n")
            pin = secrets.token_hex(8)
            env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_")}
            env.update({"SOFTHSM2_CONF": str(conf), _ENV_PIN: pin, _ENV_AKID: akid,
                        _ENV_SECRET: secret, _ENV_DB: f"sqlite:///{self.dir / 'audit.db'}"})
            self.env = env  # the server's (tests open its token with it)
            subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL,
                            "--pin", pin, "--so-pin", secrets.token_hex(8)],
                           env=env, check=True, capture_output=True)
            super().__init__("kms.bench.bare_xks", "/ready", env)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _app() -> Any:
    from hsm import AesUsage, Pin
    from hsm.pkcs11_hsm import Pkcs11Hsm, find_softhsm_module
    from kms.audit.event import AuditEvent, context_hash
    from kms.audit.log import AuditLog, init_head
    from kms.audit.record import Actor, ActorKind, Operation, Outcome, RequestMetadata
    from kms.bench.audit_bench import BENCH_PEM
    from kms.clock import system_clock
    from kms.db.engine import make_engine
    from kms.db.migrations import migrate

    # The HSM layer's own call (hsm/: the only code that speaks PKCS#11), on a token key
    # made with the same least-privilege template as the service's.
    module = find_softhsm_module()
    if module is None:
        raise SystemExit("bare_xks: SoftHSM's PKCS#11 module was not found (make install)")
    hsm = Pkcs11Hsm(module, TOKEN_LABEL, Pin(os.environ[_ENV_PIN]))
    hsm.generate_aes_key(KEY_LABEL, {AesUsage.ENCRYPT, AesUsage.DECRYPT})
    akid, secret = os.environ[_ENV_AKID], os.environ[_ENV_SECRET].encode()
    engine = make_engine(os.environ[_ENV_DB])
    migrate(engine)
    with engine.begin() as conn:
        init_head(conn)
    audit = AuditLog(engine, system_clock, origin="bench/bare", key_name="bench/bare",
                     public_key_pem=BENCH_PEM, sign=lambda _m: b"", writer="process")
    actor = Actor(kind=ActorKind.XKS_CREDENTIAL, id=akid)
    signers: dict[tuple[str, str, str], Any] = {}

    def signer(day: str, region: str, service: str) -> Any:
        cached = signers.get((day, region, service))
        if cached is None:
            k = hmac.digest(b"AWS4" + secret, day.encode(), "sha256")
            for part in (region, service, "aws4_request"):
                k = hmac.digest(k, part.encode(), "sha256")
            cached = signers[(day, region, service)] = hmac.new(k, None, hashlib.sha256)
        return cached.copy()

    async def answer(send: Send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    audit.attach_loop()
                    await audit.writer_ready(30.0)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    audit.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/ready":
            await answer(send, 200, b"{}")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            _, params = headers["authorization"].split(" ", 1)
            auth = dict(p.strip().split("=", 1) for p in params.split(","))
            credential_akid, day, region, service, _ = auth["Credential"].split("/")
            signed = auth["SignedHeaders"]
            canonical = "\n".join([
                scope["method"], scope["path"], "",
                "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in signed.split(";")),
                signed, hashlib.sha256(body).hexdigest()])
            to_sign = "\n".join([
                "AWS4-HMAC-SHA256", headers["x-amz-date"],
                f"{day}/{region}/{service}/aws4_request",
                hashlib.sha256(canonical.encode()).hexdigest()])
            mac = signer(day, region, service)
            mac.update(to_sign.encode())
            ok = credential_akid == akid and hmac.compare_digest(mac.hexdigest(),
                                                                 auth["Signature"])
        except (KeyError, ValueError):
            ok = False
        if not ok:
            await answer(send, 403, b"{}")
            return
        request = json.loads(body)
        md = request["requestMetadata"]
        aad = base64.b64decode(request["additionalAuthenticatedData"])
        sealed = hsm.encrypt(KEY_LABEL, base64.b64decode(request["plaintext"]), aad)
        await audit.append_async(AuditEvent(
            op=Operation.XKS_ENCRYPT, outcome=Outcome.OK, actor=actor, key_id=KEY_LABEL,
            key_version=1, store="default", request=RequestMetadata(
                kmsRequestId=md["kmsRequestId"], kmsOperation=md["kmsOperation"],
                awsPrincipalArn=md.get("awsPrincipalArn"), kmsKeyArn=md.get("kmsKeyArn")),
            context_hash=context_hash(aad), latency_us=0))
        await answer(send, 200, json.dumps({
            "authenticationTag": base64.b64encode(sealed.tag).decode(),
            "ciphertext": base64.b64encode(sealed.ciphertext).decode(),
            "initializationVector": base64.b64encode(sealed.iv).decode(),
            "ciphertextMetadata": ""}).encode())

    return app


def main(argv: list[str]) -> int:
    import uvicorn

    from kms.http_protocol import HeaderTimeoutProtocol

    uvicorn.run(_app(), host="127.0.0.1", port=int(argv[0]), loop="uvloop",
                http=HeaderTimeoutProtocol, log_level="warning", access_log=False,
                log_config=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
