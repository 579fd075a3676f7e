"""The PKCS#11 layer against a real SoftHSM2 token."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from hsm import (
    AesUsage,
    DuplicateLabel,
    InvalidCiphertext,
    KeyNotFound,
    PermissionDenied,
    Pin,
)
from hsm.errors import HsmConfigError
from hsm.pkcs11_hsm import Pkcs11Hsm
from tests.conftest import TEST_PIN


@pytest.fixture()
def hsm(make_token: Callable[[], str], softhsm_module: str) -> Iterator[Pkcs11Hsm]:
    h = Pkcs11Hsm(softhsm_module, make_token(), Pin(TEST_PIN))
    yield h
    h.close()


def test_aes_key_attributes_are_least_privilege(hsm: Pkcs11Hsm) -> None:
    hsm.generate_aes_key("both", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    hsm.generate_aes_key("enc", [AesUsage.ENCRYPT])
    hsm.generate_aes_key("none", [])
    both, enc, none = (hsm.key_attributes(x) for x in ("both", "enc", "none"))
    for a in (both, enc, none):
        assert a.key_type == "AES"
        assert a.sensitive is True
        assert a.extractable is False
        assert not (a.wrap or a.unwrap or a.sign or a.verify or a.derive)
    assert (both.encrypt, both.decrypt) == (True, True)
    assert (enc.encrypt, enc.decrypt) == (True, False)
    assert (none.encrypt, none.decrypt) == (False, False)
    assert hsm.list_aes_keys() == ["both", "enc", "none"]


def test_usage_flags_are_enforced(hsm: Pkcs11Hsm) -> None:
    hsm.generate_aes_key("enc", [AesUsage.ENCRYPT])
    ct = hsm.encrypt("enc", b"data", b"")
    with pytest.raises(PermissionDenied):
        hsm.decrypt("enc", ct.iv, ct.ciphertext, ct.tag, b"")
    hsm.generate_aes_key("dec", [AesUsage.DECRYPT])
    with pytest.raises(PermissionDenied):
        hsm.encrypt("dec", b"data", b"")


def test_labels_are_unique(hsm: Pkcs11Hsm) -> None:
    hsm.generate_aes_key("k", [AesUsage.ENCRYPT])
    with pytest.raises(DuplicateLabel):
        hsm.generate_aes_key("k", [AesUsage.ENCRYPT])
    with pytest.raises(DuplicateLabel):
        hsm.generate_ec_signing_key("k")


def test_gcm_round_trip_and_every_tamper_is_invalid_ciphertext(hsm: Pkcs11Hsm) -> None:
    hsm.generate_aes_key("k", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    hsm.generate_aes_key("other", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    pt, aad = b"attack at dawn" * 10, b"context-a"
    ct = hsm.encrypt("k", pt, aad)
    assert len(ct.iv) == 12 and len(ct.tag) == 16 and len(ct.ciphertext) == len(pt)
    assert ct.ciphertext != pt
    assert hsm.decrypt("k", ct.iv, ct.ciphertext, ct.tag, aad) == pt
    flipped_tag = bytes([ct.tag[0] ^ 0x01]) + ct.tag[1:]
    flipped_ct = ct.ciphertext[:5] + bytes([ct.ciphertext[5] ^ 0x80]) + ct.ciphertext[6:]
    cases = [
        ("k", ct.iv, ct.ciphertext, ct.tag, b"context-b"),  # wrong AAD
        ("k", ct.iv, ct.ciphertext, flipped_tag, aad),
        ("k", ct.iv, flipped_ct, ct.tag, aad),
        ("k", bytes(12), ct.ciphertext, ct.tag, aad),  # wrong IV
        ("other", ct.iv, ct.ciphertext, ct.tag, aad),  # wrong key
        ("k", ct.iv[:8], ct.ciphertext, ct.tag, aad),  # short IV
        ("k", ct.iv, ct.ciphertext, ct.tag[:12], aad),  # short tag
    ]
    for case in cases:
        with pytest.raises(InvalidCiphertext):
            hsm.decrypt(*case)
    # and the key still works afterwards (a failed tag check is not a device error)
    assert hsm.decrypt("k", ct.iv, ct.ciphertext, ct.tag, aad) == pt


def test_empty_plaintext_and_empty_aad(hsm: Pkcs11Hsm) -> None:
    hsm.generate_aes_key("k", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    ct = hsm.encrypt("k", b"", b"")
    assert ct.ciphertext == b""
    assert hsm.decrypt("k", ct.iv, ct.ciphertext, ct.tag, b"") == b""


def test_no_repeated_iv_over_100k_encryptions(hsm: Pkcs11Hsm) -> None:
    hsm.generate_aes_key("k", [AesUsage.ENCRYPT])
    ivs = {hsm.encrypt("k", b"x" * 32, b"a").iv for _ in range(100_000)}
    assert len(ivs) == 100_000


def test_ecdsa_signature_verifies_with_cryptography(hsm: Pkcs11Hsm) -> None:
    hsm.generate_ec_signing_key("audit")
    attrs = hsm.key_attributes("audit")
    assert attrs.key_type == "EC" and attrs.sensitive and not attrs.extractable
    assert attrs.sign and not (attrs.decrypt or attrs.derive or attrs.unwrap)
    pub = load_pem_public_key(hsm.public_key_pem("audit"))
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    assert isinstance(pub.curve, ec.SECP256R1)
    sig = hsm.sign("audit", b"checkpoint body")
    pub.verify(sig, b"checkpoint body", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        pub.verify(sig, b"another body", ec.ECDSA(hashes.SHA256()))


def test_destroyed_key_cannot_be_used(hsm: Pkcs11Hsm) -> None:
    hsm.generate_aes_key("k", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    ct = hsm.encrypt("k", b"secret", b"")
    hsm.destroy_key("k")
    assert not hsm.has_key("k")
    with pytest.raises(KeyNotFound):
        hsm.decrypt("k", ct.iv, ct.ciphertext, ct.tag, b"")
    with pytest.raises(KeyNotFound):
        hsm.encrypt("k", b"x", b"")
    with pytest.raises(KeyNotFound):
        hsm.destroy_key("k")


def test_destroy_seen_by_a_second_handle_on_the_same_token(
    make_token: Callable[[], str], softhsm_module: str
) -> None:
    label = make_token()
    a = Pkcs11Hsm(softhsm_module, label, Pin(TEST_PIN))
    b = Pkcs11Hsm(softhsm_module, label, Pin(TEST_PIN))
    a.generate_aes_key("k", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    ct = b.encrypt("k", b"x", b"")  # b caches its handle
    a.destroy_key("k")
    with pytest.raises(KeyNotFound):
        b.decrypt("k", ct.iv, ct.ciphertext, ct.tag, b"")


def test_random_bytes(hsm: Pkcs11Hsm) -> None:
    a, b = hsm.random_bytes(32), hsm.random_bytes(32)
    assert len(a) == 32 and a != b


def test_probe_reports_active_and_missing_health_key(hsm: Pkcs11Hsm) -> None:
    report = hsm.probe("health")
    assert report.status.value == "DEGRADED" and report.detail == "health key missing"
    hsm.generate_aes_key("health", [AesUsage.ENCRYPT, AesUsage.DECRYPT])
    report = hsm.probe("health")
    assert report.status.value == "ACTIVE"
    assert report.latency_ms > 0


def test_wrong_pin_is_a_config_error(make_token: Callable[[], str], softhsm_module: str) -> None:
    with pytest.raises(HsmConfigError):
        Pkcs11Hsm(softhsm_module, make_token(), Pin("wrong-pin"))


def test_pin_never_prints() -> None:
    pin = Pin(TEST_PIN)
    assert TEST_PIN not in repr(pin) and TEST_PIN not in str(pin) and TEST_PIN not in f"{pin}"
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(pin)
