"""An XKS proxy API client that signs with botocore's SigV4 signer.

It reuses one HTTP connection pool, has connect/read timeouts (AWS KMS itself gives a proxy
250 ms), and turns every error answer back into the typed :mod:`kms.errors` exception its
``errorName`` names. A transport failure or timeout is :class:`DependencyTimeoutError`.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kms import errors
from kms.errors import DependencyTimeoutError, InternalError, KmsError

SERVICE = "kms-xks-proxy"
# Transport failures before any answer (not timeouts): a call that meets one is made once more.
_CONNECTION_LOST = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError,
                    httpx.WriteError)
_BY_NAME: dict[str, type[KmsError]] = {
    cls.error_name: cls
    for cls in (errors.ValidationError, errors.InvalidStateError,
                errors.InvalidCiphertextError, errors.InvalidKeyUsageError,
                errors.AuthenticationFailedError, errors.AccessDeniedError,
                errors.KeyNotFoundError, errors.InvalidUriPathError, errors.ThrottlingError,
                errors.UnsupportedOperationError, errors.DependencyTimeoutError,
                errors.InternalError)
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class XksCiphertext:
    """What an XKS encrypt returns; all of it is needed to decrypt."""

    ciphertext: bytes = field(repr=False)
    iv: bytes
    tag: bytes
    metadata: bytes | None
    integrity_value: str | None = None


class XksClient:
    """One key store of one XKS proxy. Thread-safe (httpx.Client is)."""

    def __init__(self, endpoint: str, access_key_id: str, secret: str, *,
                 region: str = "us-east-1", timeout: float = 2.0,
                 principal_arn: str = "arn:aws:iam::000000000000:role/kms-client",
                 max_connections: int = 32, via_service: str | None = None,
                 request_ids: Callable[[], str | None] | None = None) -> None:
        """``endpoint`` is ``scheme://host[:port]/{prefix}``: everything before /kms/xks/v1.

        ``via_service`` is sent as ``kmsViaService``; ``request_ids()``, when given, names
        the ``kmsRequestId`` of calls made without an explicit one (e.g. the caller's own
        request id, so the KMS audit log joins with the caller's log).
        """
        self.endpoint = endpoint.rstrip("/")
        self._base = self.endpoint + "/kms/xks/v1"
        self._signer = SigV4Auth(Credentials(access_key_id, secret), SERVICE, region)
        self.principal_arn = principal_arn
        self.via_service = via_service
        self._request_ids = request_ids
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 1.0)),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections))

    def __repr__(self) -> str:
        return f"XksClient(endpoint={self.endpoint!r})"

    # -- operations -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("/health", {"requestMetadata": self._metadata("KmsHealthCheck")})

    def metadata(self, key_id: str) -> dict[str, Any]:
        md = self._metadata("DescribeKey")
        return self._call(f"/keys/{key_id}/metadata", {"requestMetadata": md})

    def encrypt(self, key_id: str, plaintext: bytes, aad: bytes | None = None, *,
                integrity: bool = False, request_id: str | None = None) -> XksCiphertext:
        """``request_id``: the ``kmsRequestId`` to send (default: a fresh UUID)."""
        body: dict[str, Any] = {
            "requestMetadata": self._metadata("Encrypt", key_id, request_id),
            "plaintext": _b64(plaintext),
            "encryptionAlgorithm": "AES_GCM",
        }
        if aad:
            body["additionalAuthenticatedData"] = _b64(aad)
        if integrity:
            body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
        out = self._call(f"/keys/{key_id}/encrypt", body)
        try:
            md = out.get("ciphertextMetadata")
            return XksCiphertext(
                ciphertext=base64.b64decode(out["ciphertext"], validate=True),
                iv=base64.b64decode(out["initializationVector"], validate=True),
                tag=base64.b64decode(out["authenticationTag"], validate=True),
                metadata=None if md is None else base64.b64decode(md, validate=True),
                integrity_value=out.get("ciphertextDataIntegrityValue"))
        except (KeyError, ValueError, TypeError):
            raise InternalError("the key service sent a malformed encrypt response") from None

    def decrypt(self, key_id: str, ct: XksCiphertext, aad: bytes | None = None) -> bytes:
        body: dict[str, Any] = {
            "requestMetadata": self._metadata("Decrypt", key_id),
            "ciphertext": _b64(ct.ciphertext),
            "initializationVector": _b64(ct.iv),
            "authenticationTag": _b64(ct.tag),
            "encryptionAlgorithm": "AES_GCM",
        }
        if aad:
            body["additionalAuthenticatedData"] = _b64(aad)
        if ct.metadata is not None:
            body["ciphertextMetadata"] = _b64(ct.metadata)
        out = self._call(f"/keys/{key_id}/decrypt", body)
        try:
            return base64.b64decode(out["plaintext"], validate=True)
        except (KeyError, ValueError, TypeError):
            raise InternalError("the key service sent a malformed decrypt response") from None

    def close(self) -> None:
        self._http.close()

    # -- transport ------------------------------------------------------------------------

    def _metadata(self, operation: str, key_id: str | None = None,
                  request_id: str | None = None) -> dict[str, str]:
        if request_id is None and self._request_ids is not None:
            request_id = self._request_ids()
        md = {"kmsRequestId": request_id or str(uuid.uuid4()), "kmsOperation": operation,
              "awsPrincipalArn": self.principal_arn}
        if self.via_service:
            md["kmsViaService"] = self.via_service
        if key_id is not None:
            md["kmsKeyArn"] = f"arn:aws:kms:local:000000000000:key/{key_id}"
        return md

    def _signed(self, path: str, data: bytes) -> dict[str, str]:
        request = AWSRequest(method="POST", url=self._base + path, data=data,
                             headers={"Content-Type": "application/json"})
        self._signer.add_auth(request)
        return {k: v for k, v in request.headers.items()}

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body, separators=(",", ":")).encode()
        for attempt in range(2):
            try:
                response = self._http.post(self._base + path, content=data,
                                           headers=self._signed(path, data))
                break
            except httpx.TimeoutException:  # the time budget is spent: never retried
                raise DependencyTimeoutError("the key service did not answer in time") from None
            except _CONNECTION_LOST:
                # The connection failed before an answer came: typically a kept-alive one
                # whose server (or the replica a load balancer had pinned it to) is gone.
                # Once more, signed again (httpx has dropped that connection from its pool):
                # every XKS call may be repeated (an encrypt gives another ciphertext, the
                # rest only read).
                if attempt == 0:
                    continue
                raise DependencyTimeoutError("the key service is unreachable") from None
            except httpx.HTTPError:
                raise DependencyTimeoutError("the key service is unreachable") from None
        try:
            out = response.json()
        except ValueError:
            out = None
        if response.status_code == 200 and isinstance(out, dict):
            return out
        name = out.get("errorName") if isinstance(out, dict) else None
        message = out.get("errorMessage") if isinstance(out, dict) else None
        cls = _BY_NAME.get(name or "", InternalError)
        if name is None and response.status_code >= 500:
            cls = DependencyTimeoutError
        raise cls(str(message or f"the key service answered HTTP {response.status_code}"))
