from __future__ import annotations

import pytest

from kms.envelope import EnvelopeEncryptor
from kms.envelope.testing import StaticAesKeyring

KEY_A1 = bytes(range(32))
KEY_A2 = bytes(range(32, 64))
KEY_B1 = bytes(range(64, 96))


@pytest.fixture
def keyring() -> StaticAesKeyring:
    return StaticAesKeyring({"key-a": [KEY_A1], "key-b": [KEY_B1]}, keyring_id="static")


@pytest.fixture
def encryptor(keyring: StaticAesKeyring) -> EnvelopeEncryptor:
    return EnvelopeEncryptor(keyring, "key-a")
