"""SigV4 verification (kms/xks/sigv4.py) against botocore- and curl-signed requests."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.errors import AuthenticationFailedError
from kms.xks.sigv4 import (
    SignatureRejected,
    SigningKeyCache,
    VerifiedCaller,
    derive_signing_key,
    verify_sigv4,
)
from tests.xks.conftest import (
    AKID,
    ENCRYPT_BODY,
    OTHER_SECRET,
    SECRET,
    SIGNED_AT,
    SignedRequest,
    botocore_sign,
    load_vectors,
    lookup_for,
    verify,
)

ENCRYPT_URL = "https://xks.example.com/xks/kms/xks/v1/keys/foo/encrypt"
JSON = {"Content-Type": "application/json"}


def rejected(req: SignedRequest, reason: str | None = None, **kwargs: Any) -> SignatureRejected:
    with pytest.raises(AuthenticationFailedError) as info:
        verify(req, **kwargs)
    error = info.value
    assert isinstance(error, SignatureRejected)
    assert error.http_status == 401
    assert error.error_name == "AuthenticationFailedException"
    # The client-visible message is the same for every failure and leaks nothing.
    assert error.message == "The request signature could not be verified."
    if reason is not None:
        assert error.reason == reason
    return error


# ----------------------------------------------------------------- what must verify


def test_botocore_post_json_verifies() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, JSON)
    assert "SignedHeaders=content-type;host;x-amz-date," in req.headers["Authorization"]
    caller = verify(req)
    assert caller == VerifiedCaller(AKID, "us-east-1", SIGNED_AT.date())


def test_kms_style_host_and_date_only_verifies() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    assert "SignedHeaders=host;x-amz-date," in req.headers["Authorization"]
    assert verify(req).access_key_id == AKID


def test_host_with_port_verifies_and_port_is_signed() -> None:
    req = botocore_sign("http://127.0.0.1:8000/xks/kms/xks/v1/health", b"{}", JSON)
    assert req.headers["Host"] == "127.0.0.1:8000"
    verify(req)
    rejected(req.with_headers(Host="127.0.0.1:8001"), "signature mismatch")
    rejected(req.with_headers(Host="127.0.0.1"), "signature mismatch")


def test_region_any_or_allow_list() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, region="eu-west-1")
    assert verify(req).region == "eu-west-1"
    assert verify(req, allowed_regions={"eu-west-1", "us-east-1"}).region == "eu-west-1"
    rejected(req, "region not allowed", allowed_regions={"us-east-1"})
    rejected(req, "region not allowed", allowed_regions=())


def test_header_names_case_insensitive_and_values_trimmed() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, {"Content-Type": "  application/json;   x=1 "})
    lowered = {k.lower(): v for k, v in req.headers.items()}
    upper = {k.upper(): v for k, v in req.headers.items()}
    verify(SignedRequest(req.method, req.path, req.query, lowered, req.body))
    verify(SignedRequest(req.method, req.path, req.query, upper, req.body))
    # Whitespace differences are canonicalised away; content is not.
    verify(req.with_headers(Content_Type="application/json; x=1"))
    rejected(req.with_headers(Content_Type="application/json; x=2"), "signature mismatch")


def test_unsigned_headers_may_change() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    verify(req.with_headers(User_Agent="anything", Content_Type="text/plain", Accept="*/*"))


def test_replay_within_window_verifies() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    verify(req)
    verify(req, now=SIGNED_AT + timedelta(minutes=4, seconds=59))
    verify(req)


@pytest.mark.parametrize("offset", [timedelta(minutes=5), timedelta(minutes=-5), timedelta(0)])
def test_clock_skew_up_to_five_minutes(offset: timedelta) -> None:
    verify(botocore_sign(ENCRYPT_URL, ENCRYPT_BODY), now=SIGNED_AT + offset)


def test_now_in_other_timezone_is_fine() -> None:
    from datetime import timezone

    tz = timezone(timedelta(hours=9))
    verify(botocore_sign(ENCRYPT_URL, ENCRYPT_BODY), now=SIGNED_AT.astimezone(tz))


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        verify(botocore_sign(ENCRYPT_URL, ENCRYPT_BODY), now=SIGNED_AT.replace(tzinfo=None))


def test_x_amz_content_sha256_signed_and_matching() -> None:
    import hashlib

    digest = hashlib.sha256(ENCRYPT_BODY).hexdigest()
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, {**JSON, "X-Amz-Content-SHA256": digest})
    assert "x-amz-content-sha256" in req.headers["Authorization"]
    verify(req)


def test_x_amz_content_sha256_signed_but_lying_is_rejected() -> None:
    # botocore puts the header's value into the canonical request, so the signature itself is
    # valid for the claimed hash; only the comparison with the real body catches it.
    wrong = "0" * 64
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, {**JSON, "X-Amz-Content-SHA256": wrong})
    rejected(req, "x-amz-content-sha256 does not match the body")


def test_unsigned_x_amz_content_sha256_is_ignored() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    verify(req.with_headers(X_Amz_Content_SHA256="0" * 64))


def test_empty_body_verifies() -> None:
    verify(botocore_sign("https://xks.example.com/kms/xks/v1/health", b""))


# ------------------------------------------------------------------- what must fail


def test_wrong_secret() -> None:
    rejected(botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, secret=OTHER_SECRET), "signature mismatch")


def test_unknown_access_key_id() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, access_key_id="ABCDEFGHIJKLMNOPQRST")
    rejected(req, "unknown access key id")


def test_credential_removed_takes_effect_despite_cache(key_cache: SigningKeyCache) -> None:
    credentials = {AKID: SECRET}
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    verify(req, credentials=credentials, key_cache=key_cache)
    assert len(key_cache) == 1
    del credentials[AKID]
    rejected(req, "unknown access key id", credentials=credentials, key_cache=key_cache)


def test_two_credentials_at_once() -> None:
    second = "BBBBBBBBBBBBBBBBBBBB2"
    credentials = {AKID: SECRET, second: OTHER_SECRET}
    verify(botocore_sign(ENCRYPT_URL, ENCRYPT_BODY), credentials=credentials)
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, access_key_id=second, secret=OTHER_SECRET)
    assert verify(req, credentials=credentials).access_key_id == second
    # The other key's secret does not verify for this key id.
    rejected(req, "signature mismatch", credentials={second: SECRET})


@pytest.mark.parametrize("service", ["kms", "kms-xks-proxy2", "execute-api"])
def test_wrong_service(service: str) -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, service=service)
    rejected(req, "wrong service in credential scope")


def test_tampered_body() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    rejected(SignedRequest(req.method, req.path, "", req.headers, ENCRYPT_BODY + b" "))
    rejected(SignedRequest(req.method, req.path, "", req.headers, ENCRYPT_BODY.replace(b"A", b"B")))


def test_tampered_path_and_method() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    for path in (
        "/xks/kms/xks/v1/keys/foo/decrypt",
        "/xks/kms/xks/v1/keys/Foo/encrypt",
        "/other/kms/xks/v1/keys/foo/encrypt",
        "/xks/kms/xks/v1/keys/foo/encrypt/",
    ):
        rejected(SignedRequest("POST", path, "", req.headers, req.body), "signature mismatch")
    rejected(SignedRequest("PUT", req.path, "", req.headers, req.body), "signature mismatch")
    rejected(SignedRequest("post", req.path, "", req.headers, req.body), "unsupported method")


@pytest.mark.parametrize(
    "path",
    [
        "",
        "xks/kms",
        "/xks/../kms/xks/v1/health",
        "/xks/./kms",
        "/xks//kms",
        "/xks/%6Bms/xks/v1/health",
        "/xks/kms xks",
        "/" + "a" * 1100,
    ],
)
def test_unsupported_paths_are_rejected(path: str) -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    rejected(SignedRequest("POST", path, "", req.headers, req.body), "unsupported request path")


def test_query_string_is_rejected() -> None:
    req = botocore_sign(ENCRYPT_URL + "?a=b", ENCRYPT_BODY)
    assert req.query == "a=b"
    rejected(req, "query strings are not supported")


def test_tampered_signed_header() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, JSON)
    rejected(req.with_headers(Content_Type="text/plain"), "signature mismatch")
    rejected(req.with_headers(Host="evil.example.com"), "signature mismatch")


@pytest.mark.parametrize("minutes", [6, -6, 60 * 24])
def test_date_out_of_window(minutes: int) -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    rejected(
        req, "x-amz-date outside the allowed clock skew", now=SIGNED_AT + timedelta(minutes=minutes)
    )


def test_just_past_five_minutes_fails() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    rejected(req, now=SIGNED_AT + timedelta(minutes=5, microseconds=1))


def test_x_amz_date_changed_after_signing() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    rejected(req.with_headers(X_Amz_Date="20240501T120001Z"), "signature mismatch")
    rejected(
        req.with_headers(X_Amz_Date="20240502T000000Z"),
        "credential scope date does not match x-amz-date",
        now=datetime(2024, 5, 2, tzinfo=UTC),
    )


@pytest.mark.parametrize("header", ["Authorization", "Host", "X-Amz-Date", "Content-Type"])
def test_missing_header(header: str) -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, JSON)
    reason = (
        "missing authorization header" if header == "Authorization" else "signed header missing"
    )
    rejected(req.with_headers(**{header.replace("-", "_"): None}), reason)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "20240501120000Z",
        "20240501T120000",
        "2024-05-01T12:00:00Z",
        "20241301T120000Z",
        "20240230T120000Z",
        "20240501T250000Z",
        "\uff12\uff10\uff12\uff140501T120000Z",  # fullwidth digits
    ],
)
def test_malformed_x_amz_date(value: str) -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    rejected(req.with_headers(X_Amz_Date=value))


def _with_auth(req: SignedRequest, authorization: str) -> SignedRequest:
    return req.with_headers(Authorization=authorization)


def test_signed_headers_must_include_host_and_date() -> None:
    # Signed correctly by a client that leaves host out of SignedHeaders: still refused.
    import hashlib
    import hmac

    amz_date = "20240501T120000Z"
    canonical = "\n".join(
        [
            "POST",
            "/kms/xks/v1/health",
            "",
            f"x-amz-date:{amz_date}",
            "",
            "x-amz-date",
            hashlib.sha256(b"{}").hexdigest(),
        ]
    )
    scope = "20240501/us-east-1/kms-xks-proxy/aws4_request"
    sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = derive_signing_key(SECRET.encode(), "20240501", "us-east-1", "kms-xks-proxy")
    signature = hmac.new(key, sts.encode(), "sha256").hexdigest()
    auth = (
        f"AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders=x-amz-date, "
        f"Signature={signature}"
    )
    req = SignedRequest(
        "POST",
        "/kms/xks/v1/health",
        "",
        {"X-Amz-Date": amz_date, "Authorization": auth, "Host": "h"},
        b"{}",
    )
    rejected(req, "host and x-amz-date must be signed")


def test_malformed_authorization_headers() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, JSON)
    good = req.headers["Authorization"]
    sig = good.rsplit("Signature=", 1)[1]
    cred = f"{AKID}/20240501/us-east-1/kms-xks-proxy/aws4_request"
    bad = [
        "",
        "AWS4-HMAC-SHA256",
        good.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
        good.replace("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256, "),
        good.replace("Signature=" + sig, "Signature=" + sig.upper()),
        good.replace("Signature=" + sig, "Signature=" + sig[:-1]),
        good.replace("Signature=" + sig, "Signature=" + sig + "0"),
        good.replace("aws4_request", "aws4_requests"),
        good.replace("/us-east-1/", "/US-EAST-1/"),
        good.replace("/20240501/", "/2024051/"),
        good.replace("content-type;host;x-amz-date", "host;content-type;x-amz-date"),
        good.replace("content-type;host;x-amz-date", "content-type;host;host;x-amz-date"),
        good.replace("content-type;host;x-amz-date", "Content-Type;host;x-amz-date"),
        good.replace("content-type;host;x-amz-date", "content-type;host;x-amz-date;"),
        good.replace("content-type;host;x-amz-date", "authorization;content-type;host;x-amz-date"),
        f"AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Credential={cred}, Signature={sig}",
        good + ", Extra=1",
        good + " ",
        " " + good,
        good.replace(AKID, AKID + "/x"),
        good.replace(AKID, ""),
        good.replace(", SignedHeaders", "\n, SignedHeaders"),
    ]
    for authorization in bad:
        rejected(_with_auth(req, authorization))


def test_signed_header_lists_are_checked_on_every_request() -> None:
    # The checked lists are cached (kms/xks/sigv4.py _signed_header_names); a list that
    # fails must fail again, and a good one keep verifying, whatever came before.
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, JSON)
    good = req.headers["Authorization"]
    assert "SignedHeaders=content-type;host;x-amz-date," in good
    unsorted = good.replace("content-type;host;x-amz-date", "host;content-type;x-amz-date")
    no_host = good.replace("content-type;host;x-amz-date", "content-type;x-amz-date")
    for _ in range(3):
        verify(req)
        rejected(_with_auth(req, unsorted), "malformed signed headers")
        rejected(_with_auth(req, no_host), "host and x-amz-date must be signed")


def test_authorization_length_cap() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    auth = req.headers["Authorization"]
    padded = auth.replace("Credential=", "Credential=" + "A" * 2100)
    rejected(_with_auth(req, padded), "authorization header too long")


def test_more_than_twenty_signed_headers_is_rejected() -> None:
    headers = {f"X-Custom-{i:02d}": "v" for i in range(19)}
    verify(botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, {f"X-Custom-{i:02d}": "v" for i in range(18)}))
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, headers)
    rejected(req, "too many signed headers")


def test_duplicate_headers_with_raw_list() -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, JSON)
    raw = list(req.headers.items())
    verify(req, raw_headers=[*raw, ("User-Agent", "a"), ("user-agent", "b")])
    rejected(req, "duplicate signed header", raw_headers=[*raw, ("host", "evil.example.com")])
    rejected(req, "duplicate signed header", raw_headers=[("HOST", "xks.example.com"), *raw])
    rejected(
        req,
        "duplicate authorization header",
        raw_headers=[*raw, ("authorization", req.headers["Authorization"])],
    )


def test_signing_key_cache_is_bounded_and_keyed_by_scope() -> None:
    import hmac

    def mac(cache: SigningKeyCache, secret: bytes, day: str) -> bytes:
        signer = cache.signer(secret, day, "us-east-1", "kms-xks-proxy")
        signer.update(b"string to sign")
        return signer.digest()

    cache = SigningKeyCache(maxsize=2)
    key = derive_signing_key(b"s1", "20240501", "us-east-1", "kms-xks-proxy")
    expected = hmac.digest(key, b"string to sign", "sha256")
    assert mac(cache, b"s1", "20240501") == expected
    # A hit hands out a fresh copy: earlier updates do not leak into later ones.
    assert mac(cache, b"s1", "20240501") == expected
    assert len(cache) == 1
    assert mac(cache, b"s2", "20240501") != expected
    assert mac(cache, b"s1", "20240502") != expected
    assert len(cache) == 2
    assert mac(cache, b"s1", "20240501") == expected  # evicted and re-derived
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError):
        SigningKeyCache(maxsize=0)


def test_signing_key_matches_aws_documented_example() -> None:
    # AWS General Reference, "Examples of how to derive a signing key for Signature Version 4"
    key = derive_signing_key(
        b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam"
    )
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


# ---------------------------------------------------------------------- vectors


def test_committed_vectors() -> None:
    vectors = load_vectors("sigv4.json")
    credentials = {vectors["accessKeyId"]: vectors["secretAccessKey"]}
    signed_at = datetime.fromisoformat(vectors["signedAt"].replace("Z", "+00:00"))
    assert signed_at == SIGNED_AT
    for case in vectors["cases"]:
        r = case["request"]
        req = SignedRequest(r["method"], r["path"], r["query"], r["headers"], r["body"].encode())
        if case["expect"] == "ok":
            caller = verify(req, credentials=credentials, now=signed_at)
            assert caller.region == case["region"], case["comment"]
        else:
            rejected(req, case["expect"], credentials=credentials, now=signed_at)


def test_vectors_reproduce_with_botocore() -> None:
    """The committed Authorization headers are what botocore produces (byte for byte)."""
    vectors = load_vectors("sigv4.json")
    for case in vectors["cases"][:2]:
        r = case["request"]
        headers = {k: v for k, v in r["headers"].items() if k.lower() == "content-type"}
        again = botocore_sign(
            f"https://{r['headers']['Host']}{r['path']}",
            r["body"].encode(),
            headers,
            region=case["region"],
        )
        assert again.headers["Authorization"] == r["headers"]["Authorization"]


# ------------------------------------------------------------------------- fuzz


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_authorization_only_raises_authentication_failed(authorization: str) -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    with pytest.raises(AuthenticationFailedError):
        verify(_with_auth(req, authorization))


_GOOD = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, JSON)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["POST", "GET", "post", "", "P\x00ST"]) | st.text(max_size=8),
    path=st.sampled_from([_GOOD.path, "/", ""]) | st.text(max_size=40),
    query=st.sampled_from(["", "a=b"]) | st.text(max_size=10),
    headers=st.dictionaries(
        st.sampled_from(
            ["Host", "X-Amz-Date", "Authorization", "Content-Type", "x-amz-content-sha256"]
        )
        | st.text(max_size=10),
        st.text(max_size=60),
        max_size=6,
    ),
    keep=st.sets(st.sampled_from(list(_GOOD.headers)), max_size=len(_GOOD.headers)),
    body=st.binary(max_size=64),
)
def test_fuzz_whole_request_only_raises_authentication_failed(
    method: str, path: str, query: str, headers: dict[str, str], keep: set[str], body: bytes
) -> None:
    merged = {k: v for k, v in _GOOD.headers.items() if k in keep}
    merged.update(headers)
    with contextlib.suppress(AuthenticationFailedError):
        verify(SignedRequest(method, path, query, merged, body))


def test_fuzz_authorization_structured() -> None:
    """Near-miss headers: every single-character mutation of a valid header fails cleanly.

    Except one: the space after each comma is optional (AWS accepts ``,SignedHeaders=``).
    """
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY)
    good = req.headers["Authorization"]
    allowed = {
        good.replace(", SignedHeaders", ",SignedHeaders"),
        good.replace(", Signature", ",Signature"),
    }
    for authorization in allowed:
        verify(_with_auth(req, authorization))
    for i in range(len(good)):
        for replacement in ("", "x", " ", "0", "/", ";", ","):
            mutated = good[:i] + replacement + good[i + 1 :]
            if mutated == good or mutated in allowed:
                continue
            with pytest.raises(AuthenticationFailedError):
                verify(_with_auth(req, mutated))


# ------------------------------------------------------------------------ speed


def test_verification_is_fast(key_cache: SigningKeyCache) -> None:
    req = botocore_sign(ENCRYPT_URL, ENCRYPT_BODY, JSON)
    lookup = lookup_for({AKID: SECRET})
    n = 3000
    start = time.perf_counter()
    for _ in range(n):
        verify_sigv4(
            req.method,
            req.path,
            req.query,
            req.headers,
            req.body,
            lookup=lookup,
            now=SIGNED_AT,
            key_cache=key_cache,
        )
    elapsed = time.perf_counter() - start
    # Well above 2,000 req/s on one core; generous bound so a loaded CI box stays green.
    assert n / elapsed > 5000, f"{n / elapsed:.0f} verifications/s"


# ------------------------------------------------------------------------- curl


def _curl_supports_sigv4() -> bool:
    curl = shutil.which("curl")
    if curl is None:
        return False
    out = subprocess.run([curl, "--help", "all"], capture_output=True, text=True, check=False)
    return "--aws-sigv4" in out.stdout


class _Capture(http.server.BaseHTTPRequestHandler):
    captured: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.captured.append(
            {
                "method": self.command,
                "target": self.path,
                "raw_headers": list(self.headers.items()),
                "body": body,
            }
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.skipif(not _curl_supports_sigv4(), reason="curl without --aws-sigv4")
def test_curl_aws_sigv4_request_verifies() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Capture)
    _Capture.captured = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        url = f"http://127.0.0.1:{port}/xks/kms/xks/v1/keys/foo/encrypt"
        subprocess.run(
            [
                "curl",
                "-s",
                "--max-time",
                "10",
                "--aws-sigv4",
                "aws:amz:us-east-1:kms-xks-proxy",
                "--user",
                f"{AKID}:{SECRET}",
                "-H",
                "Content-Type: application/json",
                "-d",
                ENCRYPT_BODY.decode(),
                url,
            ],
            check=True,
            capture_output=True,
        )
    finally:
        server.shutdown()
        server.server_close()
    (captured,) = _Capture.captured
    path, _, query = captured["target"].partition("?")
    raw = captured["raw_headers"]
    headers = dict(raw)
    assert "content-type" in headers["Authorization"]
    caller = verify_sigv4(
        captured["method"],
        path,
        query,
        headers,
        captured["body"],
        lookup=lookup_for({AKID: SECRET}),
        now=datetime.now(UTC),
        raw_headers=raw,
    )
    assert caller.access_key_id == AKID
    assert caller.region == "us-east-1"
    # And the same captured request fails with the wrong secret or a changed body.
    with pytest.raises(AuthenticationFailedError):
        verify_sigv4(
            captured["method"],
            path,
            query,
            headers,
            captured["body"],
            lookup=lookup_for({AKID: OTHER_SECRET}),
            now=datetime.now(UTC),
        )
    with pytest.raises(AuthenticationFailedError):
        verify_sigv4(
            captured["method"],
            path,
            query,
            headers,
            captured["body"] + b" ",
            lookup=lookup_for({AKID: SECRET}),
            now=datetime.now(UTC),
        )
