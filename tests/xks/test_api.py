"""XKS proxy API acceptance tests over real HTTP (issue 5).

One ``kms serve`` subprocess for the module, set up with the real CLI in its own KMS_HOME
(own SoftHSM token). Requests are signed two ways: botocore's SigV4Auth, as AWS KMS and
``kms.client`` sign (``host;x-amz-date``), and ``curl --aws-sigv4``, which signs
``content-type`` as well. Every request the tests send is logged so the last test can check
that the audit log holds one record for each of them.

Test order matters only for the last test (the audit log); state changes made by a test
(revocation, rules, store disable, throttle, credentials) use their own keys or are undone
in the same test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kms.xks import wire
from tests.server import ROOT, KmsServer

PREFIX = "example/uri/path/prefix"
BASE = f"/{PREFIX}/kms/xks/v1"
REGION = "us-east-1"
SERVICE = "kms-xks-proxy"
AKID = "AKIA4GBY3I6JCE5M2HPMXYZAB"
SECRET = "VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT123456"
ALICE = "arn:aws:iam::123456789012:user/Alice"
KEY_ARN = "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
AAD = "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n"  # project=nile,department=marketing
MARKER = b"never-log-this-plaintext-7f3a"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def client_cdiv(aad: bytes, md: bytes, iv: bytes, ct: bytes, tag: bytes) -> str:
    """Appendix C, recomputed independently of kms.xks.wire."""
    return b64(hashlib.sha256(aad + md + iv + ct + tag).digest())


def metadata(op: str, **extra: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"kmsRequestId": str(uuid.uuid4()), "kmsOperation": op,
                          "awsPrincipalArn": ALICE, "kmsKeyArn": KEY_ARN}
    md.update(extra)
    return {k: v for k, v in md.items() if v is not None}


def encrypt_body(plaintext: bytes, *, aad: str | None = None, cdiv: bool = False,
                 **md: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"requestMetadata": metadata("Encrypt", **md),
                            "plaintext": b64(plaintext), "encryptionAlgorithm": "AES_GCM"}
    if aad is not None:
        body["additionalAuthenticatedData"] = aad
    if cdiv:
        body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
    return body


def decrypt_body(enc: dict[str, Any], *, aad: str | None = None, **md: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"requestMetadata": metadata("Decrypt", **md),
                            "encryptionAlgorithm": "AES_GCM"}
    for name in ("ciphertext", "initializationVector", "authenticationTag",
                 "ciphertextMetadata"):
        if name in enc:
            body[name] = enc[name]
    if aad is not None:
        body["additionalAuthenticatedData"] = aad
    return body


# ------------------------------------------------------------------------- signing


def sigv4_headers(url: str, body: bytes, *, akid: str, secret: str,
                  at: datetime | None = None, method: str = "POST",
                  region: str = REGION) -> dict[str, str]:
    """botocore SigV4 (``host;x-amz-date``, as AWS KMS), optionally at a patched time."""
    request = AWSRequest(method=method, url=url, data=body)
    signer = SigV4Auth(Credentials(akid, secret), SERVICE, region)
    if at is None:
        signer.add_auth(request)
    else:
        naive = at.astimezone(UTC).replace(tzinfo=None)
        with mock.patch.object(botocore.auth, "get_current_datetime", return_value=naive):
            signer.add_auth(request)
    headers = {k: str(v) for k, v in request.headers.items()}
    headers["Content-Type"] = "application/json"  # sent, not signed (as AWS KMS does)
    return headers


@dataclass
class Sent:
    request_id: str | None
    status: int
    error: str | None
    authenticated: bool


@dataclass
class Xks:
    server: KmsServer
    http: httpx.Client
    akid: str = AKID
    secret: str = SECRET
    log: list[Sent] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.server.url

    def _record(self, body: bytes, status: int, payload: Any) -> None:
        error = payload.get("errorName") if isinstance(payload, dict) else None
        if status == 405 or error == "InvalidUriPathException":
            return  # names no operation the proxy ran: not audited
        try:
            rid = json.loads(body)["requestMetadata"]["kmsRequestId"]
        except (ValueError, KeyError, TypeError):
            rid = None
        self.log.append(Sent(rid, status, error, status != 401))

    def raw(self, path: str, body: bytes, headers: dict[str, str], *,
            method: str = "POST", record: bool = True) -> httpx.Response:
        resp = self.http.request(method, self.base_url + path, content=body, headers=headers)
        if record:
            self._record(body, resp.status_code, _json_or_none(resp))
        return resp

    def signed(self, path: str, body: bytes, *, akid: str | None = None,
               secret: str | None = None, at: datetime | None = None,
               method: str = "POST") -> tuple[bytes, dict[str, str]]:
        headers = sigv4_headers(self.base_url + path, body, akid=akid or self.akid,
                                secret=secret or self.secret, at=at, method=method)
        return body, headers

    def post(self, path: str, doc: Any, **kw: Any) -> httpx.Response:
        """botocore-signed request; ``doc`` is JSON-encoded unless it is bytes already."""
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        method = kw.pop("method", "POST")
        record = kw.pop("record", True)
        body, headers = self.signed(path, body, method=method, **kw)
        return self.raw(path, body, headers, method=method, record=record)

    def curl(self, path: str, doc: Any, *, method: str = "POST",
             akid: str | None = None, secret: str | None = None) -> tuple[int, Any]:
        """``curl --aws-sigv4`` (signs content-type too); returns (status, JSON or None)."""
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method,
               "--aws-sigv4", f"aws:amz:{REGION}:{SERVICE}",
               "--user", f"{akid or self.akid}:{secret or self.secret}",
               "-H", "Content-Type: application/json", "--data-binary", "@-",
               self.base_url + path]
        out = subprocess.run(cmd, input=body, capture_output=True, timeout=30, check=True)
        text, _, code = out.stdout.decode().rpartition("\n")
        status = int(code)
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = None
        self._record(body, status, payload)
        return status, payload


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def expect_error(resp: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"errorName", "errorMessage"}, body
    assert body["errorName"] == name, body
    msg = body["errorMessage"]
    assert len(msg) < 512 and all(0x20 <= ord(c) <= 0x7E for c in msg)
    return dict(body)


# ------------------------------------------------------------------------- fixture


KEYS = {
    "foo": "ENCRYPT,DECRYPT",
    "encrypt_only_key": "ENCRYPT",
    "decrypt_only_key": "DECRYPT",
    "impotent_key": "",
    "revoked_key": "ENCRYPT,DECRYPT",
    "ruled_key": "ENCRYPT,DECRYPT",
}


@pytest.fixture(scope="module", params=["off", "process"], ids=["inline", "hsm-worker"])
def xks(request: pytest.FixtureRequest) -> Iterator[Xks]:
    """The whole suite runs twice: HSM calls on the event loop, and in the HSM worker
    process (KMS_HSM_WORKER, kms/hsmproc/)."""
    server = KmsServer(uri_prefix=PREFIX, extra_env={"KMS_HSM_WORKER": request.param})
    try:
        for key, usage in KEYS.items():
            server.cli("keys", "create", key, "--usage", usage)
        server.cli("xks", "credentials", "add", "default", "--access-key-id", AKID,
                   stdin=SECRET + "\n")
        server.start()
        with httpx.Client(timeout=30) as http:
            yield Xks(server, http)
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


def keys_path(key: str, op: str) -> str:
    return f"{BASE}/keys/{key}/{op}"


def encrypt_ok(xks: Xks, key: str = "foo", plaintext: bytes = b"Hello World!",
               **kw: Any) -> dict[str, Any]:
    resp = xks.post(keys_path(key, "encrypt"), encrypt_body(plaintext, **kw))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


# ------------------------------------------------------------------- endpoints


def test_the_hsm_calls_are_made_where_configured(xks: Xks) -> None:
    for _ in range(10):  # (a key-state cache miss runs on a worker thread: the first, say)
        encrypt_ok(xks)
    worker = xks.http.get(xks.server.url + "/readyz").json()["hsm"].get("worker")
    if xks.server.env["KMS_HSM_WORKER"] == "off":
        assert worker is None
    else:
        assert worker["ready"] is True, worker
        assert worker["answered"] >= 5, worker


def test_health(xks: Xks) -> None:
    resp = xks.post(f"{BASE}/health",
                    {"requestMetadata": {"kmsRequestId": "h-1", "kmsOperation": "KmsHealthCheck"}})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["xksProxyFleetSize"], int) and body["xksProxyFleetSize"] > 0
    assert body["xksProxyVendor"] and body["xksProxyModel"] and body["ekmVendor"]
    fleet = body["ekmFleetDetails"]
    assert 1 <= len(fleet) <= 10
    assert fleet[0]["healthStatus"] == "ACTIVE" and fleet[0]["id"] and fleet[0]["model"]


def test_metadata(xks: Xks) -> None:
    for key, usage in (("foo", ["ENCRYPT", "DECRYPT"]), ("encrypt_only_key", ["ENCRYPT"]),
                       ("decrypt_only_key", ["DECRYPT"]), ("impotent_key", [])):
        # CreateKey sends no kmsKeyArn; an unknown kmsOperation must be accepted.
        for md in (metadata("DescribeKey"), metadata("CreateKey", kmsKeyArn=None),
                   metadata("SomeFutureOperation", futureField={"x": 1})):
            resp = xks.post(keys_path(key, "metadata"), {"requestMetadata": md})
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"keySpec": "AES_256", "keyUsage": usage,
                                   "keyStatus": "ENABLED"}


def test_encrypt_decrypt_round_trip_with_and_without_aad(xks: Xks) -> None:
    for aad in (None, AAD):
        enc = encrypt_ok(xks, plaintext=b"Hello World!", aad=aad)
        assert set(enc) == {"ciphertext", "initializationVector", "authenticationTag",
                            "ciphertextMetadata"}
        assert len(unb64(enc["ciphertext"])) == len(b"Hello World!")
        assert len(unb64(enc["initializationVector"])) in (12, 16)
        assert len(unb64(enc["authenticationTag"])) == 16
        assert len(unb64(enc["ciphertextMetadata"])) <= 20
        resp = xks.post(keys_path("foo", "decrypt"),
                        decrypt_body(enc, aad=aad, kmsOperation="ReEncrypt",
                                     unknownField="kept"))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"plaintext": b64(b"Hello World!")}


def test_cdiv_spec_vector_and_encrypt_response(xks: Xks) -> None:
    # The spec's vector (Appendix C), with both the client-side and the service formula.
    vector = [unb64(x) for x in (AAD, "a2V5X3ZlcnNpb249MQ==", "HMrlRw85cAJUd5Ax",
                                 "ghxkK1txeDNn3q8Y", "vBxN2ncH1oEkR8WVXpmyYQ==")]
    expected = "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="
    assert client_cdiv(*vector) == expected
    assert wire.cdiv(*vector) == expected
    for aad in (AAD, None):
        enc = encrypt_ok(xks, plaintext=b"Hello World!", aad=aad, cdiv=True)
        parts = [unb64(aad or ""), unb64(enc["ciphertextMetadata"]),
                 unb64(enc["initializationVector"]), unb64(enc["ciphertext"]),
                 unb64(enc["authenticationTag"])]
        assert enc["ciphertextDataIntegrityValue"] == client_cdiv(*parts)
        resp = xks.post(keys_path("foo", "decrypt"), decrypt_body(enc, aad=aad))
        assert resp.json() == {"plaintext": b64(b"Hello World!")}
    # Without the algorithm there is no CDIV.
    assert "ciphertextDataIntegrityValue" not in encrypt_ok(xks)


# ------------------------------------------------------------------------ sizes


@pytest.mark.parametrize("size", [0, 1, 4300, 8192])
def test_plaintext_sizes_supported(xks: Xks, size: int) -> None:
    plaintext = os.urandom(size)
    enc = encrypt_ok(xks, plaintext=plaintext, aad=AAD)
    assert len(unb64(enc["ciphertext"])) == size
    resp = xks.post(keys_path("foo", "decrypt"), decrypt_body(enc, aad=AAD))
    assert resp.status_code == 200, resp.text
    assert unb64(resp.json()["plaintext"]) == plaintext


def test_sizes_beyond_the_limits(xks: Xks) -> None:
    resp = xks.post(keys_path("foo", "encrypt"), encrypt_body(os.urandom(8193)))
    expect_error(resp, 501, "UnsupportedOperationException")
    resp = xks.post(keys_path("foo", "encrypt"),
                    encrypt_body(b"x", aad=b64(os.urandom(wire.MAX_AAD_BYTES + 1))))
    expect_error(resp, 501, "UnsupportedOperationException")
    # A decrypt whose ciphertext is beyond our limit: 501 as well.
    enc = encrypt_ok(xks)
    enc["ciphertext"] = b64(os.urandom(8193))
    expect_error(xks.post(keys_path("foo", "decrypt"), decrypt_body(enc)), 501,
                 "UnsupportedOperationException")
    # A body over the 64 KiB cap, refused before it is read (and before authentication:
    # not audited).
    big = json.dumps(encrypt_body(b"x", padding="A" * 70_000)).encode()
    expect_error(xks.post(keys_path("foo", "encrypt"), big, record=False), 501,
                 "UnsupportedOperationException")


def test_aad_8192_bytes_round_trip(xks: Xks) -> None:
    aad = b64(os.urandom(8192))
    plaintext = os.urandom(4300)
    enc = encrypt_ok(xks, plaintext=plaintext, aad=aad, cdiv=True)
    resp = xks.post(keys_path("foo", "decrypt"), decrypt_body(enc, aad=aad))
    assert resp.status_code == 200 and unb64(resp.json()["plaintext"]) == plaintext


# ----------------------------------------------------------------- ValidationException


@pytest.mark.parametrize("mutate", [
    "no_metadata", "empty_metadata", "no_request_id", "no_principal", "no_key_arn",
    "no_plaintext", "urlsafe_b64", "unpadded_b64", "algorithm", "cdiv_algorithm",
    "not_json", "json_array", "metadata_not_object",
])
def test_validation_errors(xks: Xks, mutate: str) -> None:
    body: Any = encrypt_body(b"\xfb\xff\xfe hello", aad=AAD)
    md = body["requestMetadata"]
    if mutate == "no_metadata":
        del body["requestMetadata"]
    elif mutate == "empty_metadata":
        body["requestMetadata"] = {}
    elif mutate == "no_request_id":
        del md["kmsRequestId"]
    elif mutate == "no_principal":
        del md["awsPrincipalArn"]
    elif mutate == "no_key_arn":
        del md["kmsKeyArn"]
    elif mutate == "no_plaintext":
        del body["plaintext"]
    elif mutate == "urlsafe_b64":
        body["plaintext"] = base64.urlsafe_b64encode(b"\xfb\xff\xfe hello").decode()
    elif mutate == "unpadded_b64":
        body["plaintext"] = b64(b"ab").rstrip("=")
    elif mutate == "algorithm":
        body["encryptionAlgorithm"] = "AES_CBC"
    elif mutate == "cdiv_algorithm":
        body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_1"
    elif mutate == "not_json":
        body = b"{not json"
    elif mutate == "json_array":
        body = b"[]"
    elif mutate == "metadata_not_object":
        body["requestMetadata"] = "x"
    expect_error(xks.post(keys_path("foo", "encrypt"), body), 400, "ValidationException")


@pytest.mark.parametrize("op", ["health", "metadata", "encrypt", "decrypt"])
def test_missing_or_empty_request_metadata_on_every_endpoint(xks: Xks, op: str) -> None:
    path = f"{BASE}/health" if op == "health" else keys_path("foo", op)
    docs: list[dict[str, Any]] = [{}, {"requestMetadata": {}}]
    for doc in docs:
        expect_error(xks.post(path, doc), 400, "ValidationException")


# ------------------------------------------------------------- InvalidCiphertext


def test_invalid_ciphertext(xks: Xks) -> None:
    enc = encrypt_ok(xks, plaintext=b"sixteen byte msg", aad=AAD)

    def flip(field_name: str) -> dict[str, Any]:
        raw = bytearray(unb64(enc[field_name]))
        raw[-1] ^= 0x01
        return {**enc, field_name: b64(bytes(raw))}

    other_aad = b64(b"project=blue,department=finance")
    md = unb64(enc["ciphertextMetadata"])
    cases: dict[str, tuple[dict[str, Any], str | None]] = {
        "tag": (flip("authenticationTag"), AAD),
        "iv": (flip("initializationVector"), AAD),
        "ciphertext": (flip("ciphertext"), AAD),
        "metadata key version": (flip("ciphertextMetadata"), AAD),
        "metadata scheme": ({**enc, "ciphertextMetadata": b64(b"\x02" + md[1:])}, AAD),
        "metadata missing": ({k: v for k, v in enc.items() if k != "ciphertextMetadata"}, AAD),
        "metadata too long": ({**enc, "ciphertextMetadata": b64(md + bytes(16))}, AAD),
        "aad missing": (enc, None),
        "aad different": (enc, other_aad),
        "metadata moved into aad": ({k: v for k, v in enc.items()
                                     if k != "ciphertextMetadata"}, enc["ciphertextMetadata"]),
        "iv 13 bytes": ({**enc, "initializationVector": b64(bytes(13))}, AAD),
        "tag 12 bytes": ({**enc, "authenticationTag": b64(bytes(12))}, AAD),
        # A well-formed 16-byte IV is accepted by the parser and fails only at the HSM.
        "iv 16 bytes": ({**enc, "initializationVector": b64(os.urandom(16))}, AAD),
    }
    for name, (fields, aad) in cases.items():
        resp = xks.post(keys_path("foo", "decrypt"), decrypt_body(fields, aad=aad))
        assert resp.status_code == 400, (name, resp.text)
        assert resp.json()["errorName"] == "InvalidCiphertextException", (name, resp.text)
    # The ciphertext is bound to its key: another key cannot open it.
    enc2 = encrypt_ok(xks, key="ruled_key", aad=AAD)
    resp = xks.post(keys_path("foo", "decrypt"), decrypt_body(enc2, aad=AAD))
    expect_error(resp, 400, "InvalidCiphertextException")


def test_sixteen_byte_iv_is_well_formed(xks: Xks) -> None:
    """The IV the proxy returns is 12 or 16 bytes; a 16-byte IV on decrypt is not a
    ValidationException but an authentication failure of the (made-up) ciphertext."""
    body = decrypt_body({"ciphertext": b64(b"abc"), "initializationVector": b64(bytes(16)),
                         "authenticationTag": b64(bytes(16)),
                         "ciphertextMetadata": b64(wire.encode_ciphertext_metadata(1, 1))})
    expect_error(xks.post(keys_path("foo", "decrypt"), body), 400, "InvalidCiphertextException")


# ----------------------------------------------------------------- key usage / state


def test_invalid_key_usage(xks: Xks) -> None:
    enc = encrypt_ok(xks, key="encrypt_only_key", aad=AAD)
    expect_error(xks.post(keys_path("encrypt_only_key", "decrypt"), decrypt_body(enc, aad=AAD)),
                 400, "InvalidKeyUsageException")
    for key in ("decrypt_only_key", "impotent_key"):
        for cdiv in (False, True):
            resp = xks.post(keys_path(key, "encrypt"), encrypt_body(b"x", aad=AAD, cdiv=cdiv))
            expect_error(resp, 400, "InvalidKeyUsageException")
    resp = xks.post(keys_path("impotent_key", "decrypt"), decrypt_body(enc, aad=AAD))
    expect_error(resp, 400, "InvalidKeyUsageException")


def test_cdiv_on_an_encrypt_only_key_is_invalid_key_usage(xks: Xks) -> None:
    """Appendix C: the CDIV is backed by an XKS *decrypt* of the output, which an
    encrypt-only key does not allow (the AWS conformance client expects this)."""
    for aad in (AAD, None):
        resp = xks.post(keys_path("encrypt_only_key", "encrypt"),
                        encrypt_body(b"x", aad=aad, cdiv=True))
        expect_error(resp, 400, "InvalidKeyUsageException")


def test_key_not_found(xks: Xks) -> None:
    for op in ("metadata", "encrypt", "decrypt"):
        body = encrypt_body(b"x") if op == "encrypt" else decrypt_body(
            {"ciphertext": b64(b"x"), "initializationVector": b64(bytes(12)),
             "authenticationTag": b64(bytes(16)),
             "ciphertextMetadata": b64(wire.encode_ciphertext_metadata(1, 1))})
        if op == "metadata":
            body = {"requestMetadata": metadata("DescribeKey")}
        expect_error(xks.post(keys_path("non_existing_key", op), body), 404,
                     "KeyNotFoundException")


def test_a_logged_answer_says_how_long_it_waited_for_its_audit_record(xks: Xks) -> None:
    """An audited refusal's log line carries ``audit_wait_ms``, a part of its
    ``duration_ms``; one without an audit record (an unknown path) has none."""
    expect_error(xks.post(keys_path("non_existing_key", "metadata"),
                          {"requestMetadata": metadata("DescribeKey")}),
                 404, "KeyNotFoundException")
    expect_error(xks.post(f"{BASE}/keys/foo/sign", {"requestMetadata": metadata("Sign")}),
                 404, "InvalidUriPathException")
    lines = [json.loads(line) for line in
             (xks.server.home / "serve.log").read_text(errors="replace").splitlines()
             if line.startswith("{") and '"http_request"' in line]
    audited, unaudited = [e for e in lines if "/kms/xks/v1/" in e["route"]][-2:]
    assert audited["status"] == unaudited["status"] == 404, lines[-2:]
    assert 0 < audited["audit_wait_ms"] <= audited["duration_ms"], audited
    assert "audit_wait_ms" not in unaudited, unaudited


def test_revoked_key_is_disabled_and_refused(xks: Xks) -> None:
    enc = encrypt_ok(xks, key="revoked_key", aad=AAD)
    xks.server.cli("keys", "revoke", "revoked_key", "--reason", "acceptance test")
    md = xks.post(keys_path("revoked_key", "metadata"),
                  {"requestMetadata": metadata("DescribeKey")})
    assert md.status_code == 200 and md.json()["keyStatus"] == "DISABLED", md.text
    expect_error(xks.post(keys_path("revoked_key", "encrypt"), encrypt_body(b"x")),
                 400, "InvalidStateException")
    expect_error(xks.post(keys_path("revoked_key", "decrypt"), decrypt_body(enc, aad=AAD)),
                 400, "InvalidStateException")


def test_disabled_store_is_invalid_state(xks: Xks) -> None:
    enc = encrypt_ok(xks, aad=AAD)
    xks.server.cli("xks", "stores", "disable", "default")
    try:
        expect_error(xks.post(keys_path("foo", "encrypt"), encrypt_body(b"x")),
                     400, "InvalidStateException")
        expect_error(xks.post(keys_path("foo", "decrypt"), decrypt_body(enc, aad=AAD)),
                     400, "InvalidStateException")
        md = xks.post(keys_path("foo", "metadata"), {"requestMetadata": metadata("DescribeKey")})
        assert md.status_code == 200 and md.json()["keyStatus"] == "DISABLED", md.text
    finally:
        xks.server.cli("xks", "stores", "enable", "default")
    assert xks.post(keys_path("foo", "decrypt"), decrypt_body(enc, aad=AAD)).status_code == 200


# ---------------------------------------------------------- secondary authorization


def test_secondary_authorization(xks: Xks) -> None:
    xks.server.cli("keys", "set-rules", "ruled_key",
                   json.dumps({"awsPrincipalArn": [ALICE], "kmsViaService": ["ebs"]}))
    bob = "arn:aws:iam::123456789012:user/Bob"
    ok = encrypt_ok(xks, key="ruled_key", aad=AAD, kmsViaService="ebs")
    denied = [
        xks.post(keys_path("ruled_key", "encrypt"),
                 encrypt_body(b"x", awsPrincipalArn=bob, kmsViaService="ebs")),
        xks.post(keys_path("ruled_key", "encrypt"), encrypt_body(b"x")),  # no kmsViaService
        xks.post(keys_path("ruled_key", "decrypt"),
                 decrypt_body(ok, aad=AAD, awsPrincipalArn=bob, kmsViaService="ebs")),
        xks.post(keys_path("ruled_key", "metadata"),
                 {"requestMetadata": metadata("DescribeKey", awsPrincipalArn=bob)}),
    ]
    for resp in denied:
        expect_error(resp, 403, "AccessDeniedException")
    resp = xks.post(keys_path("ruled_key", "decrypt"), decrypt_body(ok, aad=AAD,
                                                                    kmsViaService="ebs"))
    assert resp.status_code == 200, resp.text
    # Health is never behind secondary authorization (and names no key anyway).
    health = xks.post(f"{BASE}/health", {"requestMetadata": metadata("KmsHealthCheck",
                                                                     awsPrincipalArn=bob)})
    assert health.status_code == 200


# ------------------------------------------------------------------- URI and method


def test_invalid_uri_path(xks: Xks) -> None:
    md = {"requestMetadata": metadata("DescribeKey")}
    for path in ("/unknown/prefix/kms/xks/v1/health",
                 f"/{PREFIX}/invalid/kms/xks/v1/health",
                 f"/{PREFIX}/kms/xks/v2/health",
                 f"{BASE}/keys/foo/sign",
                 f"{BASE}/keys/foo",
                 f"{BASE}/keys/foo/metadata/extra",
                 f"{BASE}/keys/bad!key/metadata",
                 f"{BASE}/",
                 "/",
                 "/kms/xks/v1/health"):
        expect_error(xks.post(path, md), 404, "InvalidUriPathException")
    # No query strings.
    body, headers = xks.signed(f"{BASE}/health?x=1", json.dumps(md).encode())
    expect_error(xks.raw(f"{BASE}/health?x=1", body, headers), 404, "InvalidUriPathException")


@pytest.mark.parametrize("op", ["health", "metadata", "encrypt", "decrypt"])
def test_get_is_405(xks: Xks, op: str) -> None:
    path = f"{BASE}/health" if op == "health" else keys_path("foo", op)
    resp = xks.post(path, {"requestMetadata": metadata("DescribeKey")}, method="GET")
    assert resp.status_code == 405, resp.text


# ------------------------------------------------------------------- authentication


def test_authentication_failures(xks: Xks) -> None:
    path = keys_path("foo", "encrypt")
    body = json.dumps(encrypt_body(b"x")).encode()
    # A wrong secret (bad signature).
    expect_error(xks.post(path, body, secret="x" + SECRET[1:]), 401,
                 "AuthenticationFailedException")
    # An unknown (but well-formed) access key id.
    expect_error(xks.post(path, body, akid="AKIAUNKNOWNUNKNOWN2345"), 401,
                 "AuthenticationFailedException")
    # The body changed after signing (payload hash).
    signed_body, headers = xks.signed(path, body)
    expect_error(xks.raw(path, signed_body + b" ", headers), 401,
                 "AuthenticationFailedException")
    # No Authorization header; a garbage one.
    expect_error(xks.raw(path, body, {"Content-Type": "application/json"}), 401,
                 "AuthenticationFailedException")
    expect_error(xks.raw(path, body, {**headers, "Authorization": "AWS4-HMAC-SHA256 nope"}),
                 401, "AuthenticationFailedException")
    # Signed for another path (canonical URI includes the prefix).
    other, h2 = xks.signed(keys_path("ruled_key", "encrypt"), body)
    expect_error(xks.raw(path, other, h2), 401, "AuthenticationFailedException")
    # Signed for another service name.
    h3 = sigv4_headers(xks.base_url + path, body, akid=AKID, secret=SECRET)
    h3["Authorization"] = h3["Authorization"].replace("kms-xks-proxy", "kms")
    expect_error(xks.raw(path, body, h3), 401, "AuthenticationFailedException")


@pytest.mark.parametrize("offset_s", [-360, 360])
def test_date_six_minutes_off_is_rejected(xks: Xks, offset_s: int) -> None:
    at = datetime.now(UTC) + timedelta(seconds=offset_s)
    resp = xks.post(f"{BASE}/health", {"requestMetadata": metadata("KmsHealthCheck")}, at=at)
    expect_error(resp, 401, "AuthenticationFailedException")


def test_date_four_minutes_off_is_accepted(xks: Xks) -> None:
    at = datetime.now(UTC) - timedelta(minutes=4)
    resp = xks.post(f"{BASE}/health", {"requestMetadata": metadata("KmsHealthCheck")}, at=at)
    assert resp.status_code == 200, resp.text


def test_replay_within_window_is_accepted(xks: Xks) -> None:
    """The spec allows a replay inside the 5-minute window (SigV4 has no nonce)."""
    path = keys_path("foo", "encrypt")
    body, headers = xks.signed(path, json.dumps(encrypt_body(b"replayed", aad=AAD)).encode())
    first = xks.raw(path, body, headers)
    second = xks.raw(path, body, headers)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["initializationVector"] != second.json()["initializationVector"]


def test_two_live_credentials_and_removal_without_restart(xks: Xks) -> None:
    second_akid, second_secret = xks.server.add_credential("default")
    health = {"requestMetadata": metadata("KmsHealthCheck")}
    for akid, secret in ((AKID, SECRET), (second_akid, second_secret)):
        assert xks.post(f"{BASE}/health", health, akid=akid, secret=secret).status_code == 200
        enc = encrypt_ok(xks)  # with the first credential ...
        resp = xks.post(keys_path("foo", "decrypt"), decrypt_body(enc), akid=akid,
                        secret=secret)  # ... decrypted with either
        assert resp.status_code == 200, resp.text
    listed = xks.server.cli("xks", "credentials", "list", "default").stdout
    assert AKID in listed and second_akid in listed and second_secret not in listed
    xks.server.cli("xks", "credentials", "remove", "default", second_akid)
    expect_error(xks.post(f"{BASE}/health", health, akid=second_akid, secret=second_secret),
                 401, "AuthenticationFailedException")
    assert xks.post(f"{BASE}/health", health).status_code == 200


# ---------------------------------------------------------------------- throttling


def test_throttling(xks: Xks) -> None:
    xks.server.cli("xks", "stores", "set-throttle", "default", "1")
    try:
        statuses = [xks.post(f"{BASE}/health", {"requestMetadata": metadata("KmsHealthCheck")})
                    for _ in range(5)]
        assert [r.status_code for r in statuses].count(429) >= 3, [r.text for r in statuses]
        expect_error(next(r for r in statuses if r.status_code == 429), 429,
                     "ThrottlingException")
    finally:
        xks.server.cli("xks", "stores", "set-throttle", "default", "0")
    assert xks.post(f"{BASE}/health", {"requestMetadata": metadata("KmsHealthCheck")}
                    ).status_code == 200


# --------------------------------------------------------------- curl --aws-sigv4 set


@needs_curl
def test_curl_signed_every_endpoint(xks: Xks) -> None:
    status, body = xks.curl(f"{BASE}/health",
                            {"requestMetadata": {"kmsRequestId": "c-1",
                                                 "kmsOperation": "KmsHealthCheck"}})
    assert status == 200 and body["ekmFleetDetails"][0]["healthStatus"] == "ACTIVE"
    status, body = xks.curl(keys_path("foo", "metadata"),
                            {"requestMetadata": metadata("DescribeKey")})
    assert status == 200 and body["keyStatus"] == "ENABLED"
    status, enc = xks.curl(keys_path("foo", "encrypt"),
                           encrypt_body(b"curl plaintext", aad=AAD, cdiv=True))
    assert status == 200, enc
    parts = [unb64(AAD), unb64(enc["ciphertextMetadata"]), unb64(enc["initializationVector"]),
             unb64(enc["ciphertext"]), unb64(enc["authenticationTag"])]
    assert enc["ciphertextDataIntegrityValue"] == client_cdiv(*parts)
    status, dec = xks.curl(keys_path("foo", "decrypt"), decrypt_body(enc, aad=AAD))
    assert status == 200 and unb64(dec["plaintext"]) == b"curl plaintext"


@needs_curl
def test_curl_signed_errors(xks: Xks) -> None:
    enc = encrypt_ok(xks, aad=AAD)
    cases: list[tuple[str, Any, dict[str, Any], int, str | None]] = [
        (f"{BASE}/health", {}, {}, 400, "ValidationException"),
        (f"{BASE}/health", {"requestMetadata": {}}, {}, 400, "ValidationException"),
        (keys_path("foo", "encrypt"), encrypt_body(b"x"), {"akid": "Invalid" + AKID}, 401,
         "AuthenticationFailedException"),
        (keys_path("foo", "encrypt"), encrypt_body(b"x"), {"secret": "Invalid" + SECRET}, 401,
         "AuthenticationFailedException"),
        (f"/{PREFIX}/invalid/kms/xks/v1/health", {"requestMetadata": metadata("X")}, {}, 404,
         "InvalidUriPathException"),
        (keys_path("non_existing_key", "metadata"), {"requestMetadata": metadata("DescribeKey")},
         {}, 404, "KeyNotFoundException"),
        (keys_path("foo", "decrypt"), decrypt_body(enc), {}, 400, "InvalidCiphertextException"),
        (keys_path("encrypt_only_key", "encrypt"), encrypt_body(b"x", cdiv=True), {}, 400,
         "InvalidKeyUsageException"),
        (keys_path("revoked_key", "encrypt"), encrypt_body(b"x"), {}, 400,
         "InvalidStateException"),
        (keys_path("ruled_key", "encrypt"), encrypt_body(b"x"), {}, 403,
         "AccessDeniedException"),
        (keys_path("foo", "encrypt"), encrypt_body(os.urandom(8193)), {}, 501,
         "UnsupportedOperationException"),
        (keys_path("foo", "encrypt"), encrypt_body(os.urandom(8192)), {}, 200, None),
        (keys_path("foo", "encrypt"), encrypt_body(b"x"), {"method": "GET"}, 405, None),
    ]
    for path, doc, kw, status, name in cases:
        got, body = xks.curl(path, doc, **kw)
        assert got == status, (path, kw, body)
        if name is not None:
            assert body["errorName"] == name, (path, body)


def test_plaintext_marker_round_trip(xks: Xks) -> None:
    """A distinctive plaintext the audit test (last) looks for in the log."""
    enc = encrypt_ok(xks, plaintext=MARKER)
    resp = xks.post(keys_path("foo", "decrypt"), decrypt_body(enc))
    assert unb64(resp.json()["plaintext"]) == MARKER


# ------------------------------------------------------------------- the audit log

AUDIT_DUMP = """
import sys
from kms.runtime import Runtime
from kms.settings import Settings
rt = Runtime.open(Settings.from_env())
try:
    for record in rt.audit.records():
        sys.stdout.buffer.write(record + b"\\n")
finally:
    rt.close()
"""


def test_zz_audit_has_a_record_for_every_request(xks: Xks) -> None:
    """Runs last: every request the tests sent that reached an operation (everything but
    unknown paths and 405s) left one xks.* record; authentication failures are xks.auth
    records; no plaintext reaches the log."""
    out = subprocess.run([sys.executable, "-c", AUDIT_DUMP], env=xks.server.env, cwd=ROOT,
                         capture_output=True, timeout=60, check=True).stdout
    assert MARKER not in out and b64(MARKER).encode() not in out
    records = [json.loads(line) for line in out.splitlines()]
    xks_records = [r for r in records if r["op"].startswith("xks.")]
    assert len(xks_records) == len(xks.log)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in xks_records:
        rid = (r.get("request") or {}).get("kmsRequestId")
        if rid:
            by_id.setdefault(rid, []).append(r)
    auth_failures = [r for r in xks_records if r["op"] == "xks.auth"]
    assert len(auth_failures) == sum(1 for s in xks.log if not s.authenticated)
    assert all(r["outcome"] == "denied" and r["error"] == "AuthenticationFailedException"
               for r in auth_failures)
    # A body refused by the parser (or before it) has no requestMetadata in its record.
    unparsed = ("ValidationException", "UnsupportedOperationException", "ThrottlingException",
                "InvalidCiphertextException")
    for sent in xks.log:
        if not sent.authenticated or sent.request_id is None:
            continue
        matches = by_id.get(sent.request_id)
        if matches is None and sent.error in unparsed:
            continue
        assert matches, sent
        assert any(r["error"] == sent.error for r in matches), (sent, matches)
    assert all((r.get("request") or {}).get("kmsRequestId")
               for r in xks_records if r["outcome"] == "ok")
    denied = [r for r in xks_records if r["error"] == "AccessDeniedException"]
    assert denied and all(r["detail"].get("denied_by") for r in denied)
    assert all(r["latency_us"] is not None for r in xks_records)
