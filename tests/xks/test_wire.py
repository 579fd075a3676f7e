"""XKS wire formats (kms/xks/wire.py): parsing, error mapping, AAD, CDIV, responses."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms.errors import (
    InternalError,
    InvalidCiphertextError,
    KmsError,
    UnsupportedOperationError,
    ValidationError,
)
from kms.xks import wire
from kms.xks.wire import (
    CiphertextMetadata,
    EkmFleetDetail,
    cdiv,
    decode_ciphertext_metadata,
    decrypt_response,
    encode_ciphertext_metadata,
    encrypt_response,
    error_body,
    error_body_for,
    health_response,
    hsm_aad,
    metadata_response,
    parse_decrypt_request,
    parse_encrypt_request,
    parse_health_request,
    parse_metadata_request,
)
from tests.xks.conftest import load_vectors

Parser = Callable[[bytes], Any]
PARSERS: list[Parser] = [
    parse_health_request,
    parse_metadata_request,
    parse_encrypt_request,
    parse_decrypt_request,
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def metadata(**overrides: Any) -> dict[str, Any]:
    md: dict[str, Any] = {
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": "Encrypt",
        "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
        "kmsViaService": "ebs",
    }
    for key, value in overrides.items():
        if value is _DROP:
            md.pop(key, None)
        else:
            md[key] = value
    return md


_DROP = object()


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def encrypt_doc(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "requestMetadata": metadata(),
        "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",
        "plaintext": "SGVsbG8gV29ybGQh",
        "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
    }
    return _apply(doc, fields)


def decrypt_doc(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "requestMetadata": metadata(kmsOperation="Decrypt"),
        "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",
        "encryptionAlgorithm": "AES_GCM",
        "ciphertext": "ghxkK1txeDNn3q8Y",
        "ciphertextMetadata": "a2V5X3ZlcnNpb249MQ==",
        "initializationVector": "HMrlRw85cAJUd5Ax",
        "authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ==",
    }
    return _apply(doc, fields)


def _apply(doc: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    for key, value in fields.items():
        if value is _DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


# ---------------------------------------------------------- the spec's own examples


def test_spec_encrypt_example() -> None:
    request = parse_encrypt_request(body(encrypt_doc()))
    assert request.plaintext == b"Hello World!"
    assert request.additional_authenticated_data == b"project=nile,department=marketing"
    assert request.encryption_algorithm == "AES_GCM"
    assert request.wants_cdiv
    md = request.request_metadata
    assert md.kms_request_id == "4112f4d6-db54-4af4-ae30-c55a22a8dfae"
    assert md.kms_operation == "Encrypt"
    assert md.aws_principal_arn == "arn:aws:iam::123456789012:user/Alice"
    assert md.kms_via_service == "ebs"
    assert md.aws_source_vpc is None
    assert md.raw["kmsViaService"] == "ebs"


def test_spec_decrypt_example() -> None:
    request = parse_decrypt_request(body(decrypt_doc()))
    assert request.ciphertext == base64.b64decode("ghxkK1txeDNn3q8Y")
    assert request.ciphertext_metadata == b"key_version=1"
    assert len(request.initialization_vector) == 12
    assert len(request.authentication_tag) == 16
    assert request.additional_authenticated_data == b"project=nile,department=marketing"


def test_spec_metadata_and_health_examples() -> None:
    request = parse_metadata_request(
        body({"requestMetadata": metadata(kmsOperation="DescribeKey")})
    )
    assert request.request_metadata.kms_operation == "DescribeKey"
    health = parse_health_request(
        body({"requestMetadata": {"kmsRequestId": "1124f4d6", "kmsOperation": "KmsHealthCheck"}})
    )
    assert health.request_metadata.aws_principal_arn is None


def test_spec_encrypt_response_example() -> None:
    response = encrypt_response(
        base64.b64decode("ghxkK1txeDNn3q8Y"),
        base64.b64decode("HMrlRw85cAJUd5Ax"),
        base64.b64decode("vBxN2ncH1oEkR8WVXpmyYQ=="),
        ciphertext_metadata=b"key_version=1",
        ciphertext_data_integrity_value="qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=",
    )
    assert json.loads(response) == {
        "authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ==",
        "ciphertext": "ghxkK1txeDNn3q8Y",
        "ciphertextDataIntegrityValue": "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=",
        "ciphertextMetadata": "a2V5X3ZlcnNpb249MQ==",
        "initializationVector": "HMrlRw85cAJUd5Ax",
    }


# ------------------------------------------------------------------ requestMetadata


def test_unknown_fields_and_operations_are_accepted_and_kept() -> None:
    doc = encrypt_doc(futureField={"x": [1, 2]})
    doc["requestMetadata"].update(kmsOperation="BulkEncrypt", kmsRecipientAttestationPCR0="ab")
    request = parse_encrypt_request(body(doc))
    assert request.request_metadata.kms_operation == "BulkEncrypt"
    assert request.request_metadata.raw["kmsRecipientAttestationPCR0"] == "ab"
    with pytest.raises(TypeError):
        request.request_metadata.raw["x"] = 1  # type: ignore[index]


def test_kms_request_id_is_opaque() -> None:
    for value in ("", "not-a-uuid", "x" * 3000, "\u00e9\u4e2d"):
        doc = encrypt_doc(requestMetadata=metadata(kmsRequestId=value))
        assert parse_encrypt_request(body(doc)).request_metadata.kms_request_id == value


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("request_metadata", [_DROP, None, {}, [], "x", 1, [{"kmsRequestId": "a"}]])
def test_missing_or_empty_request_metadata(parse: Parser, request_metadata: Any) -> None:
    doc = decrypt_doc() if parse is parse_decrypt_request else encrypt_doc()
    _apply(doc, {"requestMetadata": request_metadata})
    with pytest.raises(ValidationError):
        parse(body(doc))


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("field", ["kmsRequestId", "kmsOperation"])
@pytest.mark.parametrize("value", [_DROP, None, 1, ["x"], {"a": "b"}, True])
def test_always_required_metadata_fields(parse: Parser, field: str, value: Any) -> None:
    doc = decrypt_doc() if parse is parse_decrypt_request else encrypt_doc()
    doc["requestMetadata"] = metadata(**{field: value})
    with pytest.raises(ValidationError):
        parse(body(doc))


@pytest.mark.parametrize(
    ("parse", "principal_required", "key_arn_required"),
    [
        (parse_health_request, False, False),
        (parse_metadata_request, True, False),
        (parse_encrypt_request, True, True),
        (parse_decrypt_request, True, True),
    ],
)
def test_per_operation_required_metadata(
    parse: Parser, principal_required: bool, key_arn_required: bool
) -> None:
    for field, required in (
        ("awsPrincipalArn", principal_required),
        ("kmsKeyArn", key_arn_required),
    ):
        doc = decrypt_doc() if parse is parse_decrypt_request else encrypt_doc()
        doc["requestMetadata"] = metadata(**{field: _DROP})
        if required:
            with pytest.raises(ValidationError):
                parse(body(doc))
        else:
            parse(body(doc))
        # Present but of the wrong type is always an error.
        doc["requestMetadata"] = metadata(**{field: 5})
        with pytest.raises(ValidationError):
            parse(body(doc))


def test_optional_metadata_fields_must_be_strings_null_means_absent() -> None:
    doc = encrypt_doc(requestMetadata=metadata(kmsViaService=None, awsSourceVpc=None))
    assert parse_encrypt_request(body(doc)).request_metadata.kms_via_service is None
    for field in ("kmsViaService", "awsSourceVpc", "awsSourceVpce"):
        with pytest.raises(ValidationError):
            parse_encrypt_request(body(encrypt_doc(requestMetadata=metadata(**{field: 1}))))


# ----------------------------------------------------------------------- body / JSON


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b'"x"',
        b"1",
        b"{",
        b"\xff\xfe{}",
        '{"requestMetadata": {}}'.encode("utf-16"),
        b"\xef\xbb\xbf{}",  # BOM
        b'{"requestMetadata": {"kmsRequestId": "a", "kmsOperation": "b"}, "x": NaN}',
        b'{"requestMetadata": {"kmsRequestId": "a", "kmsOperation": "b"}, "x": Infinity}',
        b'{"requestMetadata": {"kmsRequestId": "a", "kmsOperation": "b", "kmsOperation": "c"}}',
        b'{"a": 1, "a": 2, "requestMetadata": {"kmsRequestId": "a", "kmsOperation": "b"}}',
        b"[" * 30_000 + b"]" * 30_000,
        b'{"x":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"x": 1' + b"0" * 5000 + b"}",  # int beyond the str-to-int digit limit
        b'{"requestMetadata": {"kmsRequestId": "\xed\xa0\x80", "kmsOperation": "b"}}',
    ],
)
def test_malformed_bodies_are_validation_errors(parse: Parser, raw: bytes) -> None:
    with pytest.raises(ValidationError):
        parse(raw)


@pytest.mark.parametrize("where", ["top", "metadata", "nested"])
def test_duplicate_keys_are_refused_at_any_depth(where: str) -> None:
    # Two parsers that disagree on which duplicate wins would see two requests: refused.
    good = body(encrypt_doc())
    if where == "top":
        raw = good[:-1] + b', "plaintext": "QUFBQQ=="}'
    elif where == "metadata":
        raw = good.replace(b'"kmsOperation": "Encrypt"',
                           b'"kmsOperation": "Encrypt", "kmsOperation": "Decrypt"')
    else:
        raw = good[:-1] + b', "extra": {"a": 1, "b": {"c": 2, "c": 3}}}'
    assert raw != good
    with pytest.raises(ValidationError, match="not valid JSON"):
        parse_encrypt_request(raw)
    # The same keys once each parse (the extra field is ignored).
    parse_encrypt_request(good[:-1] + b', "extra": {"a": 1, "b": {"c": 2}}}')


@pytest.mark.parametrize("parse", PARSERS)
def test_body_size_cap_before_parsing(parse: Parser) -> None:
    with pytest.raises(UnsupportedOperationError):
        parse(b"{" * (wire.MAX_BODY_BYTES + 1))
    # Exactly at the cap is parsed (and here valid).
    doc = {"requestMetadata": metadata(kmsRequestId="")}
    if parse is parse_encrypt_request:
        doc = encrypt_doc(requestMetadata=metadata(kmsRequestId=""))
    elif parse is parse_decrypt_request:
        doc = decrypt_doc(requestMetadata=metadata(kmsRequestId=""))
    padding = wire.MAX_BODY_BYTES - len(body(doc))
    doc["requestMetadata"]["kmsRequestId"] = "x" * padding
    raw = body(doc)
    assert len(raw) == wire.MAX_BODY_BYTES
    parse(raw)


# ---------------------------------------------------------------------- Base64


@pytest.mark.parametrize(
    "value",
    [
        "SGVsbG8gV29ybGQ",  # unpadded
        "SGVsbG8gV29ybGQh\n",
        " SGVsbG8gV29ybGQh",
        "SGVs bG8gV29ybGQh",
        "SGVsbG8gV29ybGQh=",
        "SGVsbG8gV29ybGQh====",
        "SGVsbG8=gV29ybGQh",
        "-_-_",  # URL-safe
        "ab+/ab-_",
        "QR==",  # non-canonical trailing bits
        "QUI=QUI=",
        "=",
        "\u0660\u0661\u0662\u0663",  # Arabic-Indic digits
        1,
        ["SGVsbG8="],
        {"b64": "SGVsbG8="},
        True,
    ],
)
def test_bad_base64_is_validation_error(value: Any) -> None:
    with pytest.raises(ValidationError):
        parse_encrypt_request(body(encrypt_doc(plaintext=value)))
    with pytest.raises(ValidationError):
        parse_encrypt_request(body(encrypt_doc(additionalAuthenticatedData=value)))
    for field in ("ciphertext", "initializationVector", "authenticationTag", "ciphertextMetadata"):
        with pytest.raises(ValidationError):
            parse_decrypt_request(body(decrypt_doc(**{field: value})))


def test_url_safe_characters_rejected_where_standard_differs() -> None:
    data = bytes([0xFB, 0xFF, 0xBF] * 4)
    standard = b64(data)
    assert "+" in standard or "/" in standard
    assert parse_encrypt_request(body(encrypt_doc(plaintext=standard))).plaintext == data
    urlsafe = base64.urlsafe_b64encode(data).decode()
    with pytest.raises(ValidationError):
        parse_encrypt_request(body(encrypt_doc(plaintext=urlsafe)))


def test_empty_plaintext_and_aad_and_null_optionals() -> None:
    request = parse_encrypt_request(
        body(
            encrypt_doc(
                plaintext="",
                additionalAuthenticatedData=None,
                ciphertextDataIntegrityValueAlgorithm=None,
            )
        )
    )
    assert request.plaintext == b""
    assert request.additional_authenticated_data is None
    assert not request.wants_cdiv
    request = parse_encrypt_request(body(encrypt_doc(additionalAuthenticatedData="")))
    assert request.additional_authenticated_data == b""


# ------------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    ("size", "ok"),
    [(0, True), (4300, True), (8191, True), (8192, True), (8193, False), (20000, False)],
)
def test_plaintext_and_ciphertext_limits(size: int, ok: bool) -> None:
    data = b"\xab" * size
    if ok:
        assert parse_encrypt_request(body(encrypt_doc(plaintext=b64(data)))).plaintext == data
        assert parse_decrypt_request(body(decrypt_doc(ciphertext=b64(data)))).ciphertext == data
    else:
        with pytest.raises(UnsupportedOperationError):
            parse_encrypt_request(body(encrypt_doc(plaintext=b64(data))))
        with pytest.raises(UnsupportedOperationError):
            parse_decrypt_request(body(decrypt_doc(ciphertext=b64(data))))


@pytest.mark.parametrize(("size", "ok"), [(8192, True), (16384, True), (16385, False)])
def test_aad_limits(size: int, ok: bool) -> None:
    aad = b64(b"\x01" * size)
    for parse, doc in ((parse_encrypt_request, encrypt_doc), (parse_decrypt_request, decrypt_doc)):
        raw = body(doc(additionalAuthenticatedData=aad))
        if ok:
            assert parse(raw).additional_authenticated_data == b"\x01" * size
        else:
            with pytest.raises(UnsupportedOperationError):
                parse(raw)


def test_overlong_field_is_unsupported_even_if_not_base64() -> None:
    with pytest.raises(UnsupportedOperationError):
        parse_encrypt_request(body(encrypt_doc(plaintext="!" * 20000)))


@pytest.mark.parametrize("size", [0, 1, 8, 11, 13, 15, 17, 32, 600])
def test_decrypt_bad_iv_length_is_invalid_ciphertext(size: int) -> None:
    with pytest.raises(InvalidCiphertextError):
        parse_decrypt_request(body(decrypt_doc(initializationVector=b64(b"\x00" * size))))


@pytest.mark.parametrize("size", [12, 16])
def test_decrypt_iv_12_or_16(size: int) -> None:
    iv = b"\x07" * size
    assert (
        parse_decrypt_request(body(decrypt_doc(initializationVector=b64(iv)))).initialization_vector
        == iv
    )


@pytest.mark.parametrize("size", [0, 4, 12, 15, 17, 32])
def test_decrypt_bad_tag_length_is_invalid_ciphertext(size: int) -> None:
    with pytest.raises(InvalidCiphertextError):
        parse_decrypt_request(body(decrypt_doc(authenticationTag=b64(b"\x00" * size))))


def test_decrypt_ciphertext_metadata_sizes() -> None:
    assert (
        parse_decrypt_request(
            body(decrypt_doc(ciphertextMetadata=b64(b"m" * 20)))
        ).ciphertext_metadata
        == b"m" * 20
    )
    assert (
        parse_decrypt_request(body(decrypt_doc(ciphertextMetadata=_DROP))).ciphertext_metadata
        is None
    )
    with pytest.raises(InvalidCiphertextError):
        parse_decrypt_request(body(decrypt_doc(ciphertextMetadata=b64(b"m" * 21))))


@pytest.mark.parametrize("field", ["ciphertext", "initializationVector", "authenticationTag"])
def test_decrypt_missing_required_field_is_validation_error(field: str) -> None:
    with pytest.raises(ValidationError):
        parse_decrypt_request(body(decrypt_doc(**{field: _DROP})))


def test_encrypt_missing_plaintext() -> None:
    with pytest.raises(ValidationError):
        parse_encrypt_request(body(encrypt_doc(plaintext=_DROP)))


# ------------------------------------------------------------------- algorithms


@pytest.mark.parametrize(
    "algorithm", [_DROP, None, "AES_CBC", "aes_gcm", "AES_GCM ", 1, "AES_256_GCM"]
)
def test_encryption_algorithm_must_be_aes_gcm(algorithm: Any) -> None:
    with pytest.raises(ValidationError):
        parse_encrypt_request(body(encrypt_doc(encryptionAlgorithm=algorithm)))
    with pytest.raises(ValidationError):
        parse_decrypt_request(body(decrypt_doc(encryptionAlgorithm=algorithm)))


@pytest.mark.parametrize("algorithm", ["SHA_512", "sha_256", "SHA256", 256, ""])
def test_cdiv_algorithm_must_be_sha_256(algorithm: Any) -> None:
    with pytest.raises(ValidationError):
        parse_encrypt_request(body(encrypt_doc(ciphertextDataIntegrityValueAlgorithm=algorithm)))


def test_reprs_do_not_show_plaintext_or_aad() -> None:
    secret = b"TOP-SECRET-PLAINTEXT"
    aad = b"SECRET-CONTEXT"
    request = parse_encrypt_request(
        body(encrypt_doc(plaintext=b64(secret), additionalAuthenticatedData=b64(aad)))
    )
    assert "TOP-SECRET" not in repr(request) and repr(secret) not in repr(request)
    assert repr(aad) not in repr(request)
    decrypt = parse_decrypt_request(body(decrypt_doc(additionalAuthenticatedData=b64(aad))))
    assert repr(aad) not in repr(decrypt)


# ------------------------------------------------------------ ciphertextMetadata


def test_ciphertext_metadata_vectors() -> None:
    vectors = load_vectors("ciphertext_metadata.json")
    for case in vectors["valid"]:
        data = bytes.fromhex(case["hex"])
        assert encode_ciphertext_metadata(case["schemeVersion"], case["keyVersion"]) == data
        assert decode_ciphertext_metadata(data) == CiphertextMetadata(
            case["schemeVersion"], case["keyVersion"]
        )
        assert len(data) <= wire.MAX_CIPHERTEXT_METADATA_BYTES
    for case in vectors["invalid"]:
        with pytest.raises(InvalidCiphertextError):
            decode_ciphertext_metadata(bytes.fromhex(case["hex"]))


def test_ciphertext_metadata_absent_is_invalid_ciphertext() -> None:
    with pytest.raises(InvalidCiphertextError):
        decode_ciphertext_metadata(None)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ciphertext_metadata_round_trip(version: int) -> None:
    encoded = encode_ciphertext_metadata(1, version)
    assert decode_ciphertext_metadata(encoded) == CiphertextMetadata(1, version)
    for cut in range(len(encoded)):
        with pytest.raises(InvalidCiphertextError):
            decode_ciphertext_metadata(encoded[:cut])
    with pytest.raises(InvalidCiphertextError):
        decode_ciphertext_metadata(encoded + b"\x00")
    for bit in range(8):
        flipped = bytes([encoded[0] ^ (1 << bit)]) + encoded[1:]
        with pytest.raises(InvalidCiphertextError):
            decode_ciphertext_metadata(flipped)


@given(st.binary(max_size=32))
def test_ciphertext_metadata_decode_fuzz(data: bytes) -> None:
    try:
        decoded = decode_ciphertext_metadata(data)
    except InvalidCiphertextError:
        return
    assert encode_ciphertext_metadata(decoded.scheme_version, decoded.key_version) == data


@pytest.mark.parametrize(("scheme", "version"), [(0, 1), (2, 1), (1, -1), (1, 2**32), (1, True)])
def test_ciphertext_metadata_encode_rejects_programming_errors(scheme: int, version: int) -> None:
    with pytest.raises(ValueError):
        encode_ciphertext_metadata(scheme, version)


# -------------------------------------------------------------------- HSM AAD


def test_hsm_aad_vectors() -> None:
    for case in load_vectors("hsm_aad.json")["cases"]:
        aad = bytes.fromhex(case["aadHex"]) if "aadHex" in case else None
        md = bytes.fromhex(case["metadataHex"]) if "metadataHex" in case else None
        assert hsm_aad(aad, md).hex() == case["expectedHex"], case["comment"]


def test_hsm_aad_absent_equals_empty_and_spec_confusion_case_differs() -> None:
    assert hsm_aad(None, None) == hsm_aad(b"", b"") == b"\x00\x00\x00"
    md = b"\x01\x00\x00\x00\x01"
    # Encrypt with no AAD and metadata md; decrypt passing md as AAD and no metadata.
    assert hsm_aad(None, md) != hsm_aad(md, None)


@given(
    st.binary(max_size=300), st.binary(max_size=20), st.binary(max_size=300), st.binary(max_size=20)
)
def test_hsm_aad_is_injective(a1: bytes, m1: bytes, a2: bytes, m2: bytes) -> None:
    if (a1, m1) != (a2, m2):
        assert hsm_aad(a1, m1) != hsm_aad(a2, m2)


def test_hsm_aad_limits() -> None:
    assert len(hsm_aad(b"\x00" * 0xFFFF, b"m" * 20)) == 2 + 0xFFFF + 1 + 20
    with pytest.raises(UnsupportedOperationError):
        hsm_aad(b"\x00" * 0x10000, None)
    with pytest.raises(InvalidCiphertextError):
        hsm_aad(None, b"m" * 21)


# ------------------------------------------------------------------------ CDIV


def test_cdiv_vectors() -> None:
    for case in load_vectors("cdiv.json")["cases"]:

        def field(name: str, case: dict[str, str] = case) -> bytes | None:
            return base64.b64decode(case[name]) if name in case else None

        value = cdiv(
            field("additionalAuthenticatedData"),
            field("ciphertextMetadata"),
            base64.b64decode(case["initializationVector"]),
            base64.b64decode(case["ciphertext"]),
            base64.b64decode(case["authenticationTag"]),
        )
        assert value == case["ciphertextDataIntegrityValue"], case["comment"]


def test_cdiv_spec_vector_literal() -> None:
    assert (
        cdiv(
            b"project=nile,department=marketing",
            b"key_version=1",
            base64.b64decode("HMrlRw85cAJUd5Ax"),
            base64.b64decode("ghxkK1txeDNn3q8Y"),
            base64.b64decode("vBxN2ncH1oEkR8WVXpmyYQ=="),
        )
        == "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="
    )


# ------------------------------------------------------------------- responses


def test_encrypt_response_minimal_and_size_checks() -> None:
    doc = json.loads(encrypt_response(b"ct", b"\x01" * 12, b"\x02" * 16))
    assert set(doc) == {"ciphertext", "initializationVector", "authenticationTag"}
    assert json.loads(encrypt_response(b"", b"\x01" * 16, b"\x02" * 16))["ciphertext"] == ""
    with pytest.raises(InternalError):
        encrypt_response(b"ct", b"\x01" * 13, b"\x02" * 16)
    with pytest.raises(InternalError):
        encrypt_response(b"ct", b"\x01" * 12, b"\x02" * 12)
    with pytest.raises(InternalError):
        encrypt_response(b"ct", b"\x01" * 12, b"\x02" * 16, ciphertext_metadata=b"m" * 21)


def test_encrypt_response_parses_back_as_decrypt_request() -> None:
    md = encode_ciphertext_metadata(1, 7)
    out = json.loads(
        encrypt_response(b"\x10" * 40, b"\x01" * 12, b"\x02" * 16, ciphertext_metadata=md)
    )
    request = parse_decrypt_request(body(decrypt_doc(**{k: v for k, v in out.items()})))
    assert decode_ciphertext_metadata(request.ciphertext_metadata).key_version == 7
    assert request.ciphertext == b"\x10" * 40


@given(ct=st.binary(max_size=300), iv=st.sampled_from([12, 16]), tag=st.binary(min_size=16,
       max_size=16), md=st.none() | st.binary(max_size=20), plaintext=st.binary(max_size=300))
def test_responses_are_compact_json_of_their_fields(ct: bytes, iv: int, tag: bytes,
                                                     md: bytes | None, plaintext: bytes) -> None:
    # The answers are rendered directly: the same bytes as json.dumps of the document.
    iv_bytes = bytes(range(iv))
    doc = {"ciphertext": b64(ct), "initializationVector": b64(iv_bytes),
           "authenticationTag": b64(tag)}
    if md is not None:
        doc["ciphertextMetadata"] = b64(md)
    compact = {"separators": (",", ":")}
    assert encrypt_response(ct, iv_bytes, tag, ciphertext_metadata=md) == json.dumps(
        doc, **compact).encode()
    with_cdiv = encrypt_response(ct, iv_bytes, tag, ciphertext_metadata=md,
                                 ciphertext_data_integrity_value="Q0RJVg==")
    assert with_cdiv == json.dumps({**doc, "ciphertextDataIntegrityValue": "Q0RJVg=="},
                                   **compact).encode()
    assert decrypt_response(plaintext) == json.dumps({"plaintext": b64(plaintext)},
                                                     **compact).encode()


def test_decrypt_response() -> None:
    assert json.loads(decrypt_response(b"Hello World!")) == {"plaintext": "SGVsbG8gV29ybGQh"}


def test_metadata_response() -> None:
    doc = json.loads(metadata_response(["ENCRYPT", "DECRYPT"], "ENABLED"))
    assert doc == {"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"}
    assert json.loads(metadata_response([], "DISABLED"))["keyUsage"] == []
    with pytest.raises(InternalError):
        metadata_response(["ENCRYPT"], "PENDING_DELETION")
    with pytest.raises(InternalError):
        metadata_response(["X"] * 11, "ENABLED")


def test_health_response() -> None:
    details = [
        EkmFleetDetail("hsm-id-1", "Luna 5.0", "DEGRADED"),
        EkmFleetDetail("hsm-id-2", "Luna 5.1", "ACTIVE"),
    ]
    doc = json.loads(
        health_response(
            xks_proxy_fleet_size=2,
            xks_proxy_vendor="Acme Corp",
            xks_proxy_model="Acme XKS Proxy 1.0",
            ekm_vendor="Thales Group",
            ekm_fleet_details=details,
        )
    )
    assert doc == {
        "xksProxyFleetSize": 2,
        "xksProxyVendor": "Acme Corp",
        "xksProxyModel": "Acme XKS Proxy 1.0",
        "ekmVendor": "Thales Group",
        "ekmFleetDetails": [
            {"id": "hsm-id-1", "model": "Luna 5.0", "healthStatus": "DEGRADED"},
            {"id": "hsm-id-2", "model": "Luna 5.1", "healthStatus": "ACTIVE"},
        ],
    }
    common: dict[str, Any] = {"xks_proxy_vendor": "v", "xks_proxy_model": "m", "ekm_vendor": "e"}
    for size, fleet in (
        (0, details),
        (1, []),
        (1, details * 6),
        (1, [EkmFleetDetail("a", "b", "OK")]),
    ):
        with pytest.raises(InternalError):
            health_response(xks_proxy_fleet_size=size, ekm_fleet_details=fleet, **common)


def test_error_body() -> None:
    doc = json.loads(error_body("ValidationException", "plaintext must be a Base64 string."))
    assert doc == {
        "errorName": "ValidationException",
        "errorMessage": "plaintext must be a Base64 string.",
    }
    doc = json.loads(error_body("ValidationException", "é\n\x00" + "x" * 1000))
    assert doc["errorMessage"].startswith("???x")
    assert len(doc["errorMessage"]) == 511
    assert all(0x20 <= ord(c) <= 0x7E for c in doc["errorMessage"])
    assert json.loads(error_body("<script>", "m"))["errorName"] == "InternalException"


def test_error_body_for() -> None:
    status, raw = error_body_for(InvalidCiphertextError("bad tag"))
    assert status == 400
    assert json.loads(raw) == {"errorName": "InvalidCiphertextException", "errorMessage": "bad tag"}
    status, raw = error_body_for(RuntimeError("/etc/passwd secret stack"))
    assert status == 500
    assert json.loads(raw) == {
        "errorName": "InternalException",
        "errorMessage": "InternalException",
    }


# ------------------------------------------------------------------------ fuzz

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIELD_NAMES = [
    "requestMetadata",
    "plaintext",
    "ciphertext",
    "initializationVector",
    "authenticationTag",
    "additionalAuthenticatedData",
    "ciphertextMetadata",
    "encryptionAlgorithm",
    "ciphertextDataIntegrityValueAlgorithm",
]
METADATA_NAMES = ["kmsRequestId", "kmsOperation", "awsPrincipalArn", "kmsKeyArn", "kmsViaService"]


def _only_kms_errors(raw: bytes) -> None:
    for parse in PARSERS:
        with contextlib.suppress(KmsError):
            parse(raw)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    _only_kms_errors(raw)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_fuzz_arbitrary_json(document: Any) -> None:
    _only_kms_errors(json.dumps(document).encode())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["encrypt", "decrypt"]),
    st.dictionaries(
        st.sampled_from(FIELD_NAMES),
        json_values | st.text(alphabet="ABCD+/=-_", max_size=30),
        max_size=4,
    ),
    st.dictionaries(st.sampled_from(METADATA_NAMES), json_values, max_size=3),
)
def test_fuzz_near_valid_documents(
    op: str, fields: dict[str, Any], md_fields: dict[str, Any]
) -> None:
    doc = encrypt_doc() if op == "encrypt" else decrypt_doc()
    doc.update(fields)
    if isinstance(doc.get("requestMetadata"), dict):
        doc["requestMetadata"] = {**doc["requestMetadata"], **md_fields}
    _only_kms_errors(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.integers(min_value=0, max_value=200))
def test_fuzz_byte_mutations_of_valid_body(noise: bytes, position: int) -> None:
    raw = body(decrypt_doc())
    position = min(position, len(raw))
    _only_kms_errors(raw[:position] + noise + raw[position + len(noise) :])
