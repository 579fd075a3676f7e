"""Issue 9 item 4: fuzzing. Complements (does not repeat) the property tests that exist:
tests/xks/test_wire.py (XKS bodies), tests/xks/test_sigv4.py (SigV4 headers),
tests/audit/test_checkpoint.py (note round trips and fixed mangles),
tests/audit/test_verify_property.py (one located tampering per export).

Here: arbitrary and mutated envelope blobs, arbitrary signed notes, arbitrary byte-level
damage to any file of an export (the verifier answers with a report or an AuditError, never
crashes), and raw HTTP garbage (methods, paths, headers, bodies, and bytes that are not
HTTP at all) against a live ``kms serve``: never a 500, and the server stays up.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms.audit.checkpoint import parse_note, verify_note
from kms.audit.errors import AuditError
from kms.audit.verify import verify_export
from kms.envelope import EnvelopeEncryptor
from kms.envelope.format import parse_header
from kms.envelope.testing import StaticAesKeyring
from kms.errors import InvalidCiphertextError, KmsError
from tests.audit.synthetic import Signer, make_records, notes_for
from tests.audit.synthetic import build_export as build
from tests.server import KmsServer

FAST = settings(max_examples=300, deadline=None)

# -- envelope blobs -------------------------------------------------------------------------

ENC = EnvelopeEncryptor(StaticAesKeyring({"key-a": [bytes(range(32))]}, keyring_id="static"),
                        "key-a")
CONTEXT = {"tenant": "t1"}
VALID = ENC.encrypt(b"secret payload " * 20, CONTEXT)


@FAST
@given(st.binary(max_size=2048))
def test_arbitrary_blob_is_refused_cleanly(blob: bytes) -> None:
    with contextlib.suppress(InvalidCiphertextError):
        parse_header(blob)
    with pytest.raises(KmsError):
        ENC.decrypt(blob, CONTEXT)


@FAST
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)),
                min_size=1, max_size=4),
       st.integers(0, len(VALID)))
def test_mutated_blob_never_decrypts_to_something_else(flips: list[tuple[int, int]],
                                                       cut: int) -> None:
    blob = bytearray(VALID)
    for pos, xor in flips:
        blob[pos] ^= xor
    for candidate in (bytes(blob), bytes(blob[:cut])):
        if candidate == VALID:  # two flips of one byte cancel out
            continue
        with pytest.raises(KmsError):
            ENC.decrypt(candidate, CONTEXT)


# -- signed notes ---------------------------------------------------------------------------

KEY = ec.generate_private_key(ec.SECP256R1()).public_key()


@FAST
@given(st.one_of(st.binary(max_size=1200), st.text(max_size=1200),
                 st.lists(st.sampled_from(["kms.local/audit", "12", "AAAA", "", "\u2014 kms ",
                                           "\u2014 kms.local/audit abcd=="]), max_size=8)
                 .map("\n".join)))
def test_arbitrary_note_is_refused_cleanly(note: str | bytes) -> None:
    with contextlib.suppress(AuditError):
        parse_note(note)
    with pytest.raises(AuditError):
        verify_note(note, KEY, "kms.local/audit")


# -- the verifier on damaged exports --------------------------------------------------------

_SIGNER = Signer.generate()
_RECORDS = list(make_records(40))
_PRISTINE = build(Path(tempfile.mkdtemp(prefix="fuzz-export-")), _RECORDS,
                  notes_for(_RECORDS, _SIGNER, 10), _SIGNER)
_FILES = sorted(p.relative_to(_PRISTINE) for p in _PRISTINE.rglob("*") if p.is_file())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_FILES), st.sampled_from(["flip", "cut", "append", "empty", "delete"]),
       st.integers(0, 10_000), st.binary(min_size=1, max_size=64))
def test_damaged_export_gives_a_report_not_a_crash(name: Path, action: str, pos: int,
                                                   junk: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "export"
        shutil.copytree(_PRISTINE, root)
        path = root / name
        data = bytearray(path.read_bytes())
        if action == "flip" and data:
            data[pos % len(data)] ^= junk[0] or 1
        elif action == "cut":
            data = data[: pos % (len(data) + 1)]
        elif action == "append":
            data += junk
        elif action == "empty":
            data = bytearray()
        if action == "delete":
            path.unlink()
        else:
            path.write_bytes(bytes(data))
        try:
            report = verify_export(root)
        except AuditError:
            return
        changed = action == "delete" or bytes(data) != (_PRISTINE / name).read_bytes()
        if changed:
            assert report.status != "valid" or report.warnings, (name, action)


# -- raw HTTP garbage against a live server -------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[KmsServer]:
    srv = KmsServer()
    srv.cli("keys", "create", "k")
    srv.add_credential()
    srv.start()
    yield srv
    srv.stop()


PATHS = st.one_of(
    st.sampled_from(["/xks/kms/xks/v1/health", "/xks/kms/xks/v1/keys/k/encrypt",
                     "/xks/kms/xks/v1/keys/k/decrypt", "/xks/kms/xks/v1/keys/k/metadata",
                     "/xks/kms/xks/v1/keys/../encrypt", "/admin/v1/keys", "/readyz",
                     "/metrics", "/openapi.json", "/nope"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=200)
    .map(lambda s: "/" + s.replace("?", "").replace("#", "")),
)
HEADER_VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)
HEADERS = st.dictionaries(
    st.sampled_from(["authorization", "x-amz-date", "content-type", "x-amz-content-sha256",
                     "host", "x-forwarded-for", "x-custom", "expect"]),
    st.one_of(HEADER_VALUES, st.just("AWS4-HMAC-SHA256 Credential=AAAAAAAAAAAAAAAAAAAA/"
                                     "20250101/us-east-1/kms-xks-proxy/aws4_request, "
                                     "SignedHeaders=host;x-amz-date, Signature=00")),
    max_size=5)
BODIES = st.one_of(st.binary(max_size=2048), st.just(b'{"requestMetadata":{}}'),
                   st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                lambda c: st.lists(c, max_size=4)
                                | st.dictionaries(st.text(max_size=10), c, max_size=4),
                                max_leaves=20).map(lambda v: repr(v).encode()))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]), PATHS,
       HEADERS, BODIES)
def test_http_garbage_never_500(live: KmsServer, method: str, path: str,
                                headers: dict[str, str], body: bytes) -> None:
    headers.pop("host", None)
    with httpx.Client(base_url=live.url, timeout=10) as client:
        try:
            r = client.request(method, path, headers=headers, content=body)
        except httpx.RemoteProtocolError:
            return  # the server refused to parse it and closed: fine
        except httpx.LocalProtocolError:
            return  # not sendable as HTTP by the client; raw bytes are the next test
    assert r.status_code < 500 or r.status_code in (501, 503), (method, path, r.text[:300])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=1024))
def test_bytes_that_are_not_http(live: KmsServer, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
        s.sendall(data + b"\r\n\r\n")
        try:
            answer = s.recv(64)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 500"), (data, answer)
    assert httpx.get(live.url + "/healthz", timeout=5).status_code == 200
