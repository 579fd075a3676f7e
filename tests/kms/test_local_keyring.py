"""kms.envelope with the local keyring: data keys wrapped in the real SoftHSM token."""

from __future__ import annotations

import json

import pytest

from kms.audit.event import cli_actor
from kms.envelope import EnvelopeEncryptor, parse_header
from kms.errors import InvalidCiphertextError, InvalidStateError
from kms.keys.local_keyring import LocalKeyring
from kms.keys.model import KeyUsage
from tests.kms.conftest import RuntimeFactory

BOTH = frozenset({KeyUsage.ENCRYPT, KeyUsage.DECRYPT})


def test_envelope_through_the_hsm_with_rotation_and_revocation(
    make_runtime: RuntimeFactory, sqlite_url: str
) -> None:
    rt = make_runtime(sqlite_url)
    rt.keys.create_key("app", BOTH, cli_actor())
    keyring = LocalKeyring(rt.keys, cli_actor("app"), audit=rt.audit)
    enc = EnvelopeEncryptor(keyring, "app")
    ctx = {"table": "logs", "row": "42"}
    v1 = enc.encrypt(b"x" * 100_000, ctx)  # framed
    assert parse_header(v1).key_version == 1
    rt.keys.rotate("app", cli_actor())
    v2 = enc.encrypt(b"small", ctx)
    assert parse_header(v2).key_version == 2
    assert enc.decrypt(v1, ctx) == b"x" * 100_000
    assert enc.decrypt(v2, ctx) == b"small"
    with pytest.raises(InvalidCiphertextError):
        enc.decrypt(v2, {"table": "logs", "row": "43"})
    rt.keys.revoke("app", "test", cli_actor())
    with pytest.raises(InvalidStateError):
        enc.decrypt(v2, ctx)
    ops = [json.loads(b)["op"] for b in rt.audit.records()]
    assert ops.count("envelope.encrypt") == 2 and ops.count("envelope.decrypt") == 2
    assert not any(b"small" in b or b"logs" in b for b in rt.audit.records())
