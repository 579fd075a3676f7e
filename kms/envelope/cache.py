"""A bounded cache of data keys, in the spirit of the AWS Encryption SDK's
CachingCryptoMaterialsManager (docs/envelope-format.md, "Data-key cache").

Caching saves a keyring round trip (for XKS: an HTTP call into the customer's HSM) per
message, at a price: a data key keeps working after its key-encryption key is revoked,
for at most ``max_age_seconds``, unless :meth:`DataKeyCache.purge` is called. Hence the
hard limits per cached data key:

- encryption entries (keyring id, key id, context digest) -> (data key, wrapped key):
  usable while younger than ``max_age_seconds``, for at most ``max_messages`` messages and
  ``max_bytes`` plaintext bytes. A plaintext larger than ``max_bytes`` is never cached.
- decryption entries (keyring id, key id, key version, wrapped key, context digest) ->
  data key: usable while younger than ``max_age_seconds``.

Each map holds at most ``capacity`` entries and evicts the least recently used. The clock
is a parameter so that tests are exact. All methods are thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from kms.envelope.keyring import WrappedKey
from kms.envelope.secret import SecretBytes

DEFAULT_CAPACITY = 1000
DEFAULT_MAX_AGE_SECONDS = 60.0
DEFAULT_MAX_MESSAGES = 10_000
DEFAULT_MAX_BYTES = 1 << 30

#: (keyring id, key id, context digest)
EncryptionCacheKey = tuple[str, str, bytes]
#: (keyring id, key id, key version, wrapped key bytes, context digest)
DecryptionCacheKey = tuple[str, str, int, bytes, bytes]


@dataclass(slots=True)
class _EncryptionEntry:
    data_key: SecretBytes
    wrapped: WrappedKey
    created: float
    messages: int
    bytes: int


@dataclass(slots=True)
class _DecryptionEntry:
    data_key: SecretBytes
    created: float


class DataKeyCache:
    """Data keys for encryption and decryption, with hard per-key limits and LRU capacity."""

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if not max_age_seconds > 0:
            raise ValueError("max_age_seconds must be positive")
        if not 1 <= max_messages <= 2**32:
            raise ValueError("max_messages must be 1..2**32")
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.capacity = capacity
        self.max_age_seconds = max_age_seconds
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._encryption: OrderedDict[EncryptionCacheKey, _EncryptionEntry] = OrderedDict()
        self._decryption: OrderedDict[DecryptionCacheKey, _DecryptionEntry] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"DataKeyCache(encryption_entries={len(self._encryption)}, "
            f"decryption_entries={len(self._decryption)}, capacity={self.capacity}, "
            f"max_age_seconds={self.max_age_seconds}, max_messages={self.max_messages}, "
            f"max_bytes={self.max_bytes})"
        )

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("DataKeyCache holds key material and cannot be pickled")

    def __len__(self) -> int:
        with self._lock:
            return len(self._encryption) + len(self._decryption)

    def take_for_encryption(
        self, key: EncryptionCacheKey, plaintext_len: int
    ) -> tuple[SecretBytes, WrappedKey] | None:
        """A cached data key for one more message of ``plaintext_len`` bytes, or None.

        A hit counts the message against the entry's limits. An entry that is too old, or
        whose message or byte budget this message would exceed, is dropped (a miss).
        """
        with self._lock:
            entry = self._encryption.get(key)
            if entry is None:
                return None
            if (
                self._clock() - entry.created >= self.max_age_seconds
                or entry.messages >= self.max_messages
                or entry.bytes + plaintext_len > self.max_bytes
            ):
                del self._encryption[key]
                return None
            entry.messages += 1
            entry.bytes += plaintext_len
            self._encryption.move_to_end(key)
            return entry.data_key, entry.wrapped

    def put_for_encryption(
        self,
        key: EncryptionCacheKey,
        data_key: SecretBytes,
        wrapped: WrappedKey,
        plaintext_len: int,
    ) -> None:
        """Cache a fresh data key that has just been used for one message."""
        if plaintext_len > self.max_bytes:
            return
        with self._lock:
            self._encryption[key] = _EncryptionEntry(
                data_key, wrapped, self._clock(), 1, plaintext_len
            )
            self._encryption.move_to_end(key)
            if len(self._encryption) > self.capacity:
                self._encryption.popitem(last=False)

    def get_for_decryption(self, key: DecryptionCacheKey) -> SecretBytes | None:
        """The data key that ``key`` unwrapped to, if cached and younger than max age."""
        with self._lock:
            entry = self._decryption.get(key)
            if entry is None:
                return None
            if self._clock() - entry.created >= self.max_age_seconds:
                del self._decryption[key]
                return None
            self._decryption.move_to_end(key)
            return entry.data_key

    def put_for_decryption(self, key: DecryptionCacheKey, data_key: SecretBytes) -> None:
        """Cache a data key that a keyring has just unwrapped."""
        with self._lock:
            self._decryption[key] = _DecryptionEntry(data_key, self._clock())
            self._decryption.move_to_end(key)
            if len(self._decryption) > self.capacity:
                self._decryption.popitem(last=False)

    def purge(self, key_id: str | None = None) -> int:
        """Drop every entry (or those of ``key_id``, under any keyring); returns how many.

        Call this on revocation so that the cache does not keep a revoked key working
        until ``max_age_seconds`` have passed.
        """
        with self._lock:
            if key_id is None:
                count = len(self._encryption) + len(self._decryption)
                self._encryption.clear()
                self._decryption.clear()
                return count
            enc = [k for k in self._encryption if k[1] == key_id]
            dec = [k for k in self._decryption if k[1] == key_id]
            for ek in enc:
                del self._encryption[ek]
            for dk in dec:
                del self._decryption[dk]
            return len(enc) + len(dec)
