"""XKS credential rules (kms/xks/credentials.py)."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import pickle
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kms.errors import ValidationError
from kms.xks.credentials import (
    Secret,
    console_upload_json,
    generate_access_key_id,
    generate_credential,
    generate_secret_access_key,
    validate_access_key_id,
    validate_secret_access_key,
    xks_proxy_uri_path,
)

SPEC_SECRET = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE"  # spec's console file example
SPEC_AKID = "AKIAI2SFODNN7EXAMPLE"


# ------------------------------------------------------------------- generation


def test_generated_access_key_ids() -> None:
    ids = {generate_access_key_id() for _ in range(2000)}
    assert len(ids) == 2000
    for akid in ids:
        assert re.fullmatch(r"[A-Z2-7]{20}", akid)
        assert validate_access_key_id(akid) == akid


def test_generated_secrets_are_44_char_base64_of_32_bytes_and_validate() -> None:
    seen = set()
    for _ in range(2000):
        secret = generate_secret_access_key()
        value = secret.reveal()
        assert len(value) == 44
        assert len(base64.b64decode(value, validate=True)) == 32
        assert validate_secret_access_key(secret) is secret
        seen.add(value)
    assert len(seen) == 2000


def test_generate_credential_pair() -> None:
    akid, secret = generate_credential()
    validate_access_key_id(akid)
    validate_secret_access_key(secret)


# ------------------------------------------------------------------- validation


@pytest.mark.parametrize("akid", [SPEC_AKID, "A" * 20, "2" * 30, "ABCDEFGHIJKLMNOPQRSTUVWXYZ2345"])
def test_valid_access_key_ids(akid: str) -> None:
    assert validate_access_key_id(akid) == akid


@pytest.mark.parametrize(
    "akid",
    [
        "",
        "A" * 19,
        "A" * 31,
        "a" * 20,
        "A" * 19 + "0",
        "A" * 19 + "1",
        "A" * 19 + "8",
        "A" * 19 + "9",
        "A" * 19 + "=",
        "A" * 19 + " ",
        " " + "A" * 20,
        "A" * 20 + "\n",
        "\uff21" * 20,  # fullwidth A
    ],
)
def test_invalid_access_key_ids(akid: str) -> None:
    with pytest.raises(ValidationError):
        validate_access_key_id(akid)


def test_access_key_id_must_be_str() -> None:
    with pytest.raises(ValidationError):
        validate_access_key_id(12345678901234567890)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "secret",
    [
        SPEC_SECRET,
        "VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT123456",  # spec Appendix D
        "0123456789abcdef" * 4,  # openssl rand -hex 32
        base64.b64encode(bytes(range(48))).decode(),  # 64 chars
    ],
)
def test_valid_secrets(secret: str) -> None:
    checked = validate_secret_access_key(secret)
    assert isinstance(checked, Secret)
    assert checked.reveal() == secret


@pytest.mark.parametrize(
    "secret",
    [
        "",
        SPEC_SECRET[:42],  # too short
        SPEC_SECRET + "A" * 22,  # 65 chars
        SPEC_SECRET[:-1] + "-",  # URL-safe alphabet
        SPEC_SECRET[:-1] + "_",
        SPEC_SECRET[:-1] + " ",
        SPEC_SECRET[:-1] + "é",
        "A" * 43,  # one character
        "ABCDEFGHIJ" * 5,  # upper case only: < 256 bits possible
        "0123456789abcdef" * 3,  # hex, 48 chars = 192 bits
        "abababababababababababababababababababababab",
    ],
)
def test_invalid_secrets(secret: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_secret_access_key(secret)
    if secret:
        assert secret not in info.value.message
        assert secret not in str(info.value)


# ------------------------------------------------------------------------ Secret


def test_secret_never_prints() -> None:
    secret = Secret(SPEC_SECRET)
    for rendering in (
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret}",
        f"{secret:>60}",
        repr([secret]),
        repr({"k": secret}),
    ):
        assert SPEC_SECRET not in rendering
        assert "*" in rendering


def test_secret_refuses_pickling() -> None:
    secret = Secret(SPEC_SECRET)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(secret, protocol=protocol)
    with pytest.raises(TypeError):
        pickle.dumps({"nested": [secret]})


def test_secret_is_immutable_comparable_and_copyable() -> None:
    secret = Secret(SPEC_SECRET)
    assert secret == Secret(SPEC_SECRET)
    assert secret != Secret(SPEC_SECRET[::-1])
    assert secret != SPEC_SECRET  # never equal to a plain string
    assert copy.copy(secret) is secret
    assert copy.deepcopy([secret])[0] is secret
    assert secret.reveal_bytes() == SPEC_SECRET.encode()
    assert len(secret) == len(SPEC_SECRET)
    with pytest.raises(AttributeError):
        secret._value = "x"
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


# ----------------------------------------------------------- console upload file


def test_console_upload_json_matches_spec_example() -> None:
    document = console_upload_json(
        "keystores/4a0d79d6-1d1b-49fd-9dbe-799cb9c0fb3f", SPEC_AKID, Secret(SPEC_SECRET)
    )
    assert document == {
        "XksProxyUriPath": "/keystores/4a0d79d6-1d1b-49fd-9dbe-799cb9c0fb3f/kms/xks/v1",
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": SPEC_AKID,
            "RawSecretAccessKey": SPEC_SECRET,
        },
    }
    assert json.loads(json.dumps(document)) == document


@pytest.mark.parametrize(
    ("prefix", "path"),
    [
        ("xks", "/xks/kms/xks/v1"),
        ("/xks", "/xks/kms/xks/v1"),
        ("/xks/", "/xks/kms/xks/v1"),
        ("", "/kms/xks/v1"),
        ("a/b_c-D9", "/a/b_c-D9/kms/xks/v1"),
        ("a" * 116, "/" + "a" * 116 + "/kms/xks/v1"),
    ],
)
def test_uri_paths(prefix: str, path: str) -> None:
    assert xks_proxy_uri_path(prefix) == path
    assert console_upload_json(prefix, SPEC_AKID, SPEC_SECRET)["XksProxyUriPath"] == path


@pytest.mark.parametrize("prefix", ["a" * 117, "x.y", "a b", "a//b", "ä", "a?b", "%41"])
def test_invalid_uri_paths(prefix: str) -> None:
    with pytest.raises(ValidationError):
        console_upload_json(prefix, SPEC_AKID, SPEC_SECRET)


def test_console_upload_json_validates_credentials() -> None:
    with pytest.raises(ValidationError):
        console_upload_json("xks", "lowercase" * 3, SPEC_SECRET)
    with pytest.raises(ValidationError):
        console_upload_json("xks", SPEC_AKID, "short")


@given(st.text(max_size=80))
def test_validators_raise_only_validation_error(value: str) -> None:
    for check in (validate_access_key_id, validate_secret_access_key, xks_proxy_uri_path):
        with contextlib.suppress(ValidationError):
            check(value)
