"""RFC 6962 / RFC 9162 Merkle tree hashing, compact ranges and proofs (pure, no I/O).

* ``leaf_hash(d) = SHA-256(0x00 || d)`` and ``node_hash(l, r) = SHA-256(0x01 || l || r)``
  (RFC 6962 §2.1, RFC 9162 §2.1.1); the empty tree hashes to ``SHA-256("")``.
* :class:`CompactRange` is the right edge of the tree: the roots of the perfect subtrees
  whose sizes are the set bits of the tree size, largest first. Appending is O(log n) and
  it serializes to bytes or JSON so the database can keep it next to the log head.
* Proof generation follows RFC 6962 §2.1.1 (PATH) and §2.1.2 (SUBPROOF); verification
  follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency).

Leaf sources for proof generation are either a sequence of leaf hashes or a callable
``get(i) -> leaf hash`` (e.g. a database lookup); proof generation hashes O(n) nodes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kms.audit.errors import InvalidProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "LeafSource",
    "consistency_proof",
    "extend_right_edge",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: Root of the empty tree (RFC 6962 §2.1: MTH({}) = SHA-256()).
EMPTY_ROOT = hashlib.sha256(b"").digest()
#: Largest tree size we accept anywhere (proof paths are then at most 2*64 hashes).
MAX_TREE_SIZE = 1 << 63

_sha256 = hashlib.sha256

LeafSource = Sequence[bytes] | Callable[[int], bytes]
"""Leaf hashes by index: a sequence, or a callable returning the hash of leaf ``i``."""


def leaf_hash(data: bytes) -> bytes:
    """MTH of a one-leaf tree: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes")


class CompactRange:
    """Right-edge frontier of a Merkle tree of ``size`` leaves starting at leaf 0.

    ``hashes`` holds the roots of the perfect subtrees of the tree, left to right (one per
    set bit of ``size``, largest subtree first). That is all that is needed to append a
    leaf and to compute the root at the current size.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        hashes = list(hashes)
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < MAX_TREE_SIZE:
            raise ValueError("compact range size out of bounds")
        if len(hashes) != size.bit_count():
            raise ValueError("compact range needs one hash per set bit of its size")
        for h in hashes:
            _check_hash(h, "compact range hash")
        self._size = size
        self._hashes = hashes

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Perfect-subtree roots, left to right."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Append one leaf *hash* (not leaf data). O(log n) node hashes, amortized O(1)."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        hashes = self._hashes
        size = self._size
        h = leaf
        # Each trailing 1-bit of the old size is a perfect subtree that merges with h.
        while size & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            size >>= 1
        hashes.append(h)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append several leaf hashes in order (the same nodes as appending one by one)."""
        leaves = list(leaves)
        for leaf in leaves:
            if len(leaf) != HASH_SIZE:
                raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        extend_right_edge(self._hashes, self._size, leaves)
        self._size += len(leaves)

    def root(self) -> bytes:
        """MTH of the leaves appended so far (RFC 6962 §2.1)."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        r = hashes[-1]
        for h in reversed(hashes[:-1]):
            r = _sha256(b"\x01" + h + r).digest()
        return r

    def copy(self) -> CompactRange:
        """An independent copy."""
        return CompactRange(self._size, self._hashes)

    # --- serialization -----------------------------------------------------------------
    # Binary form: 8-byte big-endian size || the hashes concatenated (32 bytes each).

    def to_bytes(self) -> bytes:
        """Serialize as ``size (u64 big-endian) || hashes``."""
        return self._size.to_bytes(8, "big") + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        """Inverse of :meth:`to_bytes`; strict about lengths."""
        if len(data) < 8 or len(data) > 8 + 64 * HASH_SIZE:
            raise ValueError("bad compact range encoding length")
        size = int.from_bytes(data[:8], "big")
        body = data[8:]
        if len(body) != size.bit_count() * HASH_SIZE:
            raise ValueError("bad compact range encoding length")
        return cls(size, [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)])

    def to_json(self) -> dict[str, Any]:
        """JSON-able form: ``{"size": n, "hashes": [hex, ...]}``."""
        return {"size": self._size, "hashes": [h.hex() for h in self._hashes]}

    @classmethod
    def from_json(cls, obj: Any) -> CompactRange:
        """Inverse of :meth:`to_json`."""
        if not isinstance(obj, dict) or set(obj) != {"size", "hashes"}:
            raise ValueError("compact range JSON must have exactly size and hashes")
        hashes = obj["hashes"]
        if not isinstance(hashes, list) or len(hashes) > 64:
            raise ValueError("compact range hashes must be a list")
        out: list[bytes] = []
        for h in hashes:
            if not isinstance(h, str) or len(h) != 2 * HASH_SIZE:
                raise ValueError("compact range hash must be 64 hex characters")
            out.append(bytes.fromhex(h))
        return cls(obj["size"], out)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    def __hash__(self) -> int:
        return hash((self._size, tuple(self._hashes)))

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


def extend_right_edge(hashes: list[bytes], size: int, leaves: Sequence[bytes]) -> None:
    """Append leaf hashes to ``hashes``, the right edge (perfect-subtree roots, largest
    first) of a tree of ``size`` leaves, in place. Works a level at a time: the same
    node hashes as appending one by one, with fewer interpreter steps."""
    items = list(leaves)
    start = size  # position of items[0] within its level
    kept: list[bytes] = []  # new right-edge nodes, lowest level first
    while items:
        if start & 1:  # items[0] is a right child: its left sibling waits on the edge
            items = [hashes.pop(), *items]
            start -= 1
        if len(items) & 1:
            kept.append(items.pop())
        items = [_sha256(b"\x01" + left + right).digest()
                 for left, right in zip(items[::2], items[1::2], strict=True)]
        start >>= 1
    hashes.extend(reversed(kept))


def _getter(leaves: LeafSource) -> Callable[[int], bytes]:
    if callable(leaves):
        return leaves
    return leaves.__getitem__


def _subtree_root(get: Callable[[int], bytes], lo: int, hi: int) -> bytes:
    """MTH of leaves [lo, hi)."""
    cr = CompactRange()
    for i in range(lo, hi):
        cr.append(get(i))
    return cr.root()


def root_of(leaves: Iterable[bytes]) -> bytes:
    """MTH of a list of leaf hashes (RFC 6962 §2.1); the empty list gives EMPTY_ROOT."""
    cr = CompactRange()
    cr.extend(leaves)
    return cr.root()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(index: int, tree_size: int, leaves: LeafSource) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(index, D[tree_size]): sibling hashes from leaf to root."""
    if not 0 <= index < tree_size <= MAX_TREE_SIZE:
        raise ValueError("index must be in [0, tree_size)")
    get = _getter(leaves)
    path: list[bytes] = []
    lo, hi, m = 0, tree_size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(_subtree_root(get, lo + k, hi))
            hi = lo + k
        else:
            path.append(_subtree_root(get, lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()  # collected root-down; PATH lists the leaf's sibling first
    return path


def consistency_proof(size1: int, size2: int, leaves: LeafSource) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(size1, D[size2]) = SUBPROOF(size1, D[size2], true).

    Empty when ``size1`` is 0 or equal to ``size2``.
    """
    if not 0 <= size1 <= size2 <= MAX_TREE_SIZE:
        raise ValueError("need 0 <= size1 <= size2")
    if size1 == 0 or size1 == size2:
        return []
    get = _getter(leaves)
    proof: list[bytes] = []
    lo, hi, m, whole = 0, size2, size1, True
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                proof.append(_subtree_root(get, lo, hi))
            break
        k = _split(n)
        if m <= k:
            proof.append(_subtree_root(get, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_subtree_root(get, lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    proof.reverse()
    return proof


def root_from_inclusion_proof(
    index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes:
    """RFC 9162 §2.1.3.2: the root implied by an inclusion proof; raises if malformed."""
    if not 0 <= index < tree_size <= MAX_TREE_SIZE:
        raise InvalidProofError("leaf index out of range for tree size")
    if len(leaf) != HASH_SIZE:
        raise InvalidProofError("leaf hash has wrong length")
    if len(proof) > 64:
        raise InvalidProofError("inclusion proof too long")
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise InvalidProofError("proof hash has wrong length")
        if sn == 0:
            raise InvalidProofError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofError("inclusion proof too short")
    return r


def verify_inclusion(
    index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an inclusion proof (RFC 9162 §2.1.3.2). Raises InvalidProofError."""
    got = root_from_inclusion_proof(index, tree_size, leaf, proof)
    if not hmac.compare_digest(got, root):
        raise InvalidProofError("inclusion proof does not lead to the expected root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check a consistency proof (RFC 9162 §2.1.4.2). Raises InvalidProofError."""
    if not 0 <= size1 <= size2 <= MAX_TREE_SIZE:
        raise InvalidProofError("need 0 <= size1 <= size2")
    if len(proof) > 128:
        raise InvalidProofError("consistency proof too long")
    for p in proof:
        if len(p) != HASH_SIZE:
            raise InvalidProofError("proof hash has wrong length")
    if size1 == size2:
        if proof:
            raise InvalidProofError("proof must be empty for equal sizes")
        if not hmac.compare_digest(root1, root2):
            raise InvalidProofError("roots differ for equal sizes")
        return
    if size1 == 0:
        # Every tree is consistent with the empty tree; the proof is empty.
        if proof:
            raise InvalidProofError("proof must be empty from the empty tree")
        return
    if not proof:
        raise InvalidProofError("empty consistency proof")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is a node of tree 2
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProofError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofError("consistency proof too short")
    if not (hmac.compare_digest(fr, root1) and hmac.compare_digest(sr, root2)):
        raise InvalidProofError("consistency proof does not match the roots")
