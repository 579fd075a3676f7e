"""Shared helpers for the XKS tests: botocore-signed requests at an exact time."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kms.xks.sigv4 import SigningKeyCache, VerifiedCaller, verify_sigv4

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "xks"

AKID = "AKIAI2SFODNN7EXAMPLE"
SECRET = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE"
OTHER_SECRET = "VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT123456"
SIGNED_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

ENCRYPT_BODY = json.dumps(
    {
        "requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
            "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:key/1234abcd",
            "kmsOperation": "Encrypt",
            "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
        },
        "plaintext": "SGVsbG8gV29ybGQh",
        "encryptionAlgorithm": "AES_GCM",
    }
).encode()


def load_vectors(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


@dataclass(frozen=True)
class SignedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    extra: dict[str, Any] = field(default_factory=dict)

    def with_headers(self, **changes: str | None) -> SignedRequest:
        """Copy with headers changed (case-insensitively); None removes a header."""
        headers = dict(self.headers)
        for name, value in changes.items():
            name = name.replace("_", "-")
            for existing in [k for k in headers if k.lower() == name.lower()]:
                del headers[existing]
            if value is not None:
                headers[name] = value
        return replace(self, headers=headers)


def botocore_sign(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    at: datetime = SIGNED_AT,
    access_key_id: str = AKID,
    secret: str = SECRET,
    region: str = "us-east-1",
    service: str = "kms-xks-proxy",
    method: str = "POST",
) -> SignedRequest:
    """Sign with botocore's SigV4Auth exactly as kms.client / AWS KMS would, at ``at``."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    naive_utc = at.astimezone(UTC).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=naive_utc):
        SigV4Auth(Credentials(access_key_id, secret), service, region).add_auth(request)
    parts = urlsplit(url)
    sent = {"Host": parts.netloc}
    sent.update({k: str(v) for k, v in request.headers.items()})
    return SignedRequest(method, parts.path, parts.query, sent, body)


def lookup_for(credentials: dict[str, str]) -> Any:
    def lookup(access_key_id: str) -> bytes | None:
        secret = credentials.get(access_key_id)
        return None if secret is None else secret.encode()

    return lookup


def verify(
    req: SignedRequest,
    *,
    now: datetime = SIGNED_AT,
    credentials: dict[str, str] | None = None,
    **kwargs: Any,
) -> VerifiedCaller:
    return verify_sigv4(
        req.method,
        req.path,
        req.query,
        req.headers,
        req.body,
        lookup=lookup_for(credentials if credentials is not None else {AKID: SECRET}),
        now=now,
        **kwargs,
    )


@pytest.fixture
def key_cache() -> SigningKeyCache:
    return SigningKeyCache(maxsize=8)
