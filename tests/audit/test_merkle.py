"""RFC 6962 / 9162 Merkle tree: published vectors, corruption probes, pymerkle agreement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InclusionProof, InmemoryTree
from pymerkle.core import _inclusion_path_layout

from kms.audit import merkle
from kms.audit.errors import InvalidProofError

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "audit" / "rfc6962.json").read_text()
)
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]
LEAF_HASHES = [merkle.leaf_hash(x) for x in LEAVES]
ROOTS = [bytes.fromhex(x) for x in VECTORS["roots"]]


def _hx(items: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in items]


def test_leaf_hashes_match_vectors() -> None:
    assert [h.hex() for h in LEAF_HASHES] == VECTORS["leaf_hashes"]


@pytest.mark.parametrize("size", range(9))
def test_roots_match_vectors(size: int) -> None:
    assert merkle.root_of(LEAF_HASHES[:size]) == ROOTS[size]
    cr = merkle.CompactRange()
    cr.extend(LEAF_HASHES[:size])
    assert cr.root() == ROOTS[size]
    assert cr.size == size


def test_empty_root_is_sha256_of_nothing() -> None:
    assert merkle.EMPTY_ROOT.hex() == VECTORS["roots"][0]
    assert merkle.CompactRange().root() == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", sorted(VECTORS["compact_ranges"], key=int))
def test_compact_range_hashes_match_vectors(size: str) -> None:
    cr = merkle.CompactRange()
    cr.extend(LEAF_HASHES[: int(size)])
    assert [h.hex() for h in cr.hashes] == VECTORS["compact_ranges"][size]


@pytest.mark.parametrize("vec", VECTORS["inclusion"], ids=lambda v: f"{v['index']}@{v['size']}")
def test_inclusion_vectors(vec: dict[str, object]) -> None:
    index, size = int(vec["index"]), int(vec["size"])  # type: ignore[call-overload]
    proof = _hx(vec["proof"])  # type: ignore[arg-type]
    assert merkle.inclusion_proof(index, size, LEAF_HASHES) == proof
    assert merkle.inclusion_proof(index, size, LEAF_HASHES.__getitem__) == proof
    merkle.verify_inclusion(index, size, LEAF_HASHES[index], proof, ROOTS[size])


@pytest.mark.parametrize("vec", VECTORS["consistency"], ids=lambda v: f"{v['size1']}-{v['size2']}")
def test_consistency_vectors(vec: dict[str, object]) -> None:
    s1, s2 = int(vec["size1"]), int(vec["size2"])  # type: ignore[call-overload]
    proof = _hx(vec["proof"])  # type: ignore[arg-type]
    assert merkle.consistency_proof(s1, s2, LEAF_HASHES) == proof
    merkle.verify_consistency(s1, s2, ROOTS[s1], ROOTS[s2], proof)


def _corrupt_inclusion(  # type: ignore[no-untyped-def]
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
):
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    yield index - 1, size, root, leaf, proof
    yield index + 1, size, root, leaf, proof
    yield index ^ 2, size, root, leaf, proof
    yield index, size * 2, root, leaf, proof
    yield index, size // 2, root, leaf, proof
    yield index, size, root, b"WrongLeaf".ljust(32, b"\0"), proof
    yield index, size, merkle.EMPTY_ROOT, leaf, proof
    yield index, size, some, leaf, proof
    yield index, size, root, leaf, [*proof, root]
    yield index, size, root, leaf, [root, *proof]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        yield index, size, root, leaf, bad
    if proof:
        yield index, size, root, leaf, proof[:-1]
    if len(proof) > 1:
        yield index, size, root, leaf, [proof[0], some, *proof[1:]]


@pytest.mark.parametrize(
    "vec", VECTORS["inclusion"][1:], ids=lambda v: f"{v['index']}@{v['size']}"
)
def test_inclusion_rejects_corruptions(vec: dict[str, object]) -> None:
    index, size = int(vec["index"]), int(vec["size"])  # type: ignore[call-overload]
    proof = _hx(vec["proof"])  # type: ignore[arg-type]
    probes = _corrupt_inclusion(index, size, proof, ROOTS[size], LEAF_HASHES[index])
    for i, s, root, leaf, p in probes:
        with pytest.raises((InvalidProofError, ValueError)):
            merkle.verify_inclusion(i, s, leaf, p, root)


@pytest.mark.parametrize(
    "vec", VECTORS["consistency"][1:], ids=lambda v: f"{v['size1']}-{v['size2']}"
)
def test_consistency_rejects_corruptions(vec: dict[str, object]) -> None:
    s1, s2 = int(vec["size1"]), int(vec["size2"])  # type: ignore[call-overload]
    proof = _hx(vec["proof"])  # type: ignore[arg-type]
    r1, r2 = ROOTS[s1], ROOTS[s2]
    probes = [
        (s1 - 1, s2, r1, r2, proof), (s1 + 1, s2, r1, r2, proof), (s1 ^ 2, s2, r1, r2, proof),
        (s1, s2 * 2, r1, r2, proof), (s1, s2 // 2, r1, r2, proof),
        (s1, s2, r2, r1, proof), (s1, s2, b"\x01" * 32, r2, proof),
        (s1, s2, r1, b"\x01" * 32, proof),
        (s1, s2, r1, r2, []), (s1, s2, r1, r2, [*proof, r1]), (s1, s2, r1, r2, [r2, *proof]),
        (s1, s2, r1, r2, [proof[0], *proof]), (s1, s2, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        probes.append((s1, s2, r1, r2, bad))
    for a, b, x, y, p in probes:
        if (a, b, x, y, p) == (s1, s2, r1, r2, proof) or a < 0:
            continue
        with pytest.raises(InvalidProofError):
            merkle.verify_consistency(a, b, x, y, p)


def test_consistency_edge_cases() -> None:
    merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, ROOTS[5], [])
    with pytest.raises(InvalidProofError):
        merkle.verify_consistency(2, 1, ROOTS[2], ROOTS[1], [])
    with pytest.raises(InvalidProofError):
        merkle.verify_consistency(1, 1, ROOTS[1], ROOTS[2], [])
    with pytest.raises(InvalidProofError):
        merkle.verify_consistency(1, 1, ROOTS[1], ROOTS[1], [merkle.EMPTY_ROOT])
    with pytest.raises(InvalidProofError):
        merkle.verify_inclusion(0, 0, LEAF_HASHES[0], [], merkle.EMPTY_ROOT)


def test_compact_range_serialization_round_trips() -> None:
    for size in range(9):
        cr = merkle.CompactRange()
        cr.extend(LEAF_HASHES[:size])
        assert merkle.CompactRange.from_bytes(cr.to_bytes()) == cr
        assert merkle.CompactRange.from_json(json.loads(json.dumps(cr.to_json()))) == cr
    with pytest.raises(ValueError):
        merkle.CompactRange.from_bytes((3).to_bytes(8, "big") + b"\0" * 32)  # needs 2 hashes
    with pytest.raises(ValueError):
        merkle.CompactRange(3, [b"\0" * 32])
    with pytest.raises(ValueError):
        merkle.CompactRange.from_bytes(b"\0" * 7)


# --- agreement with pymerkle (RFC 6962-compatible: security mode prefixes 0x00 / 0x01) -----

def _pymerkle_tree(data: list[bytes]) -> InmemoryTree:
    tree = InmemoryTree(algorithm="sha256")  # security on: 0x00 leaf, 0x01 node prefixes
    for d in data:
        tree.append_entry(d)
    return tree


_data = st.lists(st.binary(max_size=24), min_size=1, max_size=70)


@settings(max_examples=60, deadline=None)
@given(data=_data, picks=st.data())
def test_agrees_with_pymerkle(data: list[bytes], picks: st.DataObject) -> None:
    tree = _pymerkle_tree(data)
    leaves = [merkle.leaf_hash(d) for d in data]
    n = len(data)
    assert [tree.get_leaf(i + 1) for i in range(n)] == leaves
    cr = merkle.CompactRange()
    for size in range(1, n + 1):
        cr.append(leaves[size - 1])
        assert cr.root() == tree.get_root(size)
    assert merkle.root_of(leaves) == tree.get_root(n)

    size = picks.draw(st.integers(1, n))
    index = picks.draw(st.integers(0, size - 1))
    root = tree.get_root(size)
    ours = merkle.inclusion_proof(index, size, leaves)
    theirs = tree.prove_inclusion(index + 1, size)
    # pymerkle's path is [leaf, siblings bottom-up...]: the same siblings as RFC PATH.
    assert theirs.path[1:] == ours
    merkle.verify_inclusion(index, size, leaves[index], ours, root)
    merkle.verify_inclusion(index, size, leaves[index], theirs.path[1:], root)
    # ...and pymerkle accepts our path, given its own orientation rule for this shape.
    rule, _ = _inclusion_path_layout(index + 1, size)
    InclusionProof("sha256", True, size, index + 1, rule, [leaves[index], *ours]).verify(
        leaves[index], root
    )

    size1 = picks.draw(st.integers(1, size))
    ours_c = merkle.consistency_proof(size1, size, leaves)
    merkle.verify_consistency(size1, size, tree.get_root(size1), root, ours_c)
    # pymerkle's consistency proof checks out against our roots.
    tree.prove_consistency(size1, size).verify(merkle.root_of(leaves[:size1]), root)


@settings(max_examples=40, deadline=None)
@given(data=_data, cut=st.integers(0, 200))
def test_compact_range_serialization_property(data: list[bytes], cut: int) -> None:
    leaves = [merkle.leaf_hash(d) for d in data]
    k = cut % (len(leaves) + 1)
    cr = merkle.CompactRange()
    cr.extend(leaves[:k])
    restored = merkle.CompactRange.from_bytes(cr.to_bytes())
    restored.extend(leaves[k:])
    assert restored.root() == merkle.root_of(leaves)
