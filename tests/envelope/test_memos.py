"""The two memos of the hot path (kms/envelope/context.py, format.py) never change a
result: digests and headers equal the unmemoized computation, invalid input still fails
every time, and the memos stay bounded."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.envelope import context as ctx_mod
from kms.envelope import format as fmt
from kms.envelope.context import context_digest, encode_context
from kms.envelope.keyring import WrappedKey
from kms.errors import ValidationError

texts = st.text(min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(texts, st.text(max_size=30), max_size=5))
def test_context_digest_equals_the_digest_of_the_encoding(context: dict[str, str]) -> None:
    for _ in range(2):  # the second call is served by the memo
        assert context_digest(context) == hashlib.sha256(encode_context(context)).digest()


def test_order_of_pairs_does_not_matter_and_values_do() -> None:
    a = context_digest({"tenant": "t1", "purpose": "log"})
    assert context_digest({"purpose": "log", "tenant": "t1"}) == a
    assert context_digest({"tenant": "t2", "purpose": "log"}) != a


def test_invalid_contexts_fail_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValidationError):
            context_digest({"": "empty key"})
        with pytest.raises(ValidationError):
            context_digest({"k": 1})  # type: ignore[dict-item]


def test_str_subclasses_and_large_contexts_are_not_memoized() -> None:
    class Sly(str):
        pass

    ctx_mod._MEMO.clear()
    context_digest({Sly("k"): "v"})
    context_digest({"big": "x" * 1000})
    assert ctx_mod._MEMO == {}
    context_digest({"k": "v"})
    assert len(ctx_mod._MEMO) == 1


def test_context_memo_is_bounded() -> None:
    for i in range(ctx_mod._MEMO_ENTRIES + 10):
        context_digest({"i": str(i)})
    assert len(ctx_mod._MEMO) <= ctx_mod._MEMO_ENTRIES


def _unmemoized_header(w: WrappedKey, mid: bytes, com: bytes, frame: int) -> bytes:
    fmt._PREFIX_MEMO.clear()
    return fmt.encode_header(w, mid, com, frame)


@pytest.mark.parametrize("frame", [0, 4096])
def test_headers_equal_the_unmemoized_ones(frame: int) -> None:
    w = WrappedKey("kr", "key-1", 3, os.urandom(60))
    for _ in range(3):
        mid, com = os.urandom(32), os.urandom(32)
        memo = fmt.encode_header(w, mid, com, frame)
        assert memo == _unmemoized_header(w, mid, com, frame)
        header = fmt.parse_header(memo + b"\x00" * 64)
        assert (header.key_id, header.key_version, header.message_id) == ("key-1", 3, mid)


def test_invalid_wrapped_keys_fail_every_time() -> None:
    bad = WrappedKey("kr", "bad id", 1, b"x")
    for _ in range(2):
        with pytest.raises(ValueError):
            fmt.encode_header(bad, os.urandom(32), os.urandom(32), 0)


@pytest.mark.parametrize("frame", [0, 4096])
def test_fresh_prefixes_equal_the_memoized_ones(frame: int) -> None:
    w = WrappedKey("kr", "key-1", 3, os.urandom(60))
    ids = fmt.wrap_aad_prefix("kr", "key-1")
    mid, com = os.urandom(32), os.urandom(32)
    assert (fmt.encode_header(w, mid, com, frame, ids=ids)
            == _unmemoized_header(w, mid, com, frame))


def test_fresh_prefixes_still_check_version_and_wrapped_length() -> None:
    ids = fmt.wrap_aad_prefix("kr", "key-1")
    for bad in (WrappedKey("kr", "key-1", 1 << 32, b"x"), WrappedKey("kr", "key-1", 1, b""),
                WrappedKey("kr", "key-1", 1, b"x" * (fmt.MAX_WRAPPED_KEY_LEN + 1))):
        with pytest.raises(ValueError):
            fmt.encode_header(bad, os.urandom(32), os.urandom(32), 0, ids=ids)


def test_uncached_blobs_leave_the_header_memo_to_cached_keys() -> None:
    """A data key used for one blob would only push the prefixes of cached keys out."""
    from kms.envelope import DataKeyCache, EnvelopeEncryptor
    from kms.envelope.testing import StaticAesKeyring

    keyring = StaticAesKeyring({"key-1": [os.urandom(32)]})
    ctx = {"tenant": "t"}
    fmt._PREFIX_MEMO.clear()
    uncached = EnvelopeEncryptor(keyring, "key-1")
    blobs = [uncached.encrypt(b"p%d" % i, ctx) for i in range(3)]
    assert fmt._PREFIX_MEMO == {}
    assert [uncached.decrypt(b, ctx) for b in blobs] == [b"p0", b"p1", b"p2"]
    cached = EnvelopeEncryptor(keyring, "key-1", cache=DataKeyCache())
    blobs = [cached.encrypt(b"q%d" % i, ctx) for i in range(3)]
    assert len(fmt._PREFIX_MEMO) == 1  # the cached key's prefix, built once
    assert [cached.decrypt(b, ctx) for b in blobs] == [b"q0", b"q1", b"q2"]
