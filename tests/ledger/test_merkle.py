"""RFC 9162 Merkle tree: reference vectors, every small proof, and transparency-dev's corruption probes."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from mcp_server.errors import SignatureInvalid
from mcp_server.ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)


def dh(text: str) -> bytes:
    return bytes.fromhex(text)


# Reference vectors from github.com/transparency-dev/merkle, proof/verify_test.go at commit
# 02194e9afb6c1d95b5381350007963aa70fff472 (`leaves`, `roots`, `inclusionProofs`, `consistencyProofs`,
# `sha256SomeHash`). That file numbers inclusion leaves from 1 (it verifies `p.leaf-1`); the indexes
# below are 0-based. The same vectors are in its testdata/{inclusion,consistency}/*/happy-path.json.
LEAVES = [
    dh(""),
    dh("00"),
    dh("10"),
    dh("2021"),
    dh("3031"),
    dh("40414243"),
    dh("5051525354555657"),
    dh("606162636465666768696a6b6c6d6e6f"),
]
ROOTS = {  # tree size -> root
    1: dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    2: dh("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    3: dh("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    4: dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    5: dh("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    6: dh("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    7: dh("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    8: dh("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
}
INCLUSION_VECTORS = [  # (index, size, proof)
    (
        0,
        8,
        [
            dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            dh("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            dh("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [dh("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (0, 1, []),
]
CONSISTENCY_VECTORS = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            dh("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            dh("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            dh("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]
SOME_HASH = dh("abacaba000000000000000000000000000000000000000000060061e00123456")

LEAF_HASHES = [leaf_hash(data) for data in LEAVES]
# A bigger log of distinct leaves for exhaustive checks.
LOG = [leaf_hash(b"leaf %d" % i) for i in range(64)]
LOG_ROOTS = [root_from_leaf_hashes(LOG[:size]) for size in range(len(LOG) + 1)]


def flip(data: bytes, bit: int = 3) -> bytes:
    """`data` with one bit of its first byte flipped (transparency-dev flips bit 3 or 4)."""
    return bytes([data[0] ^ (1 << bit)]) + data[1:]


def rejected(check: Callable[[], None]) -> bool:
    try:
        check()
    except ProofError:
        return True
    return False


# -- hashing ----------------------------------------------------------------------------------------


def test_hasher_vectors() -> None:
    # transparency-dev/merkle rfc6962/rfc6962_test.go, commit 78493b07ef9b552e3379abf9e23d4da26fbe797c.
    assert dh("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == EMPTY_ROOT
    assert leaf_hash(b"") == dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"L123456") == dh("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    assert node_hash(b"N123", b"N456") == dh(
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )
    assert HASH_SIZE == 32


def test_domain_separation() -> None:
    left, right = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert node_hash(left, right) != leaf_hash(left + right)
    assert node_hash(left, right) != node_hash(right, left)


@pytest.mark.parametrize("size", range(9))
def test_reference_roots(size: int) -> None:
    want = ROOTS.get(size, EMPTY_ROOT)
    assert root_from_leaf_hashes(LEAF_HASHES[:size]) == want


def test_root_of_one_leaf_is_its_hash() -> None:
    assert root_from_leaf_hashes([SOME_HASH]) == SOME_HASH


# -- reference proofs and transparency-dev's probes -------------------------------------------------


def inclusion_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """transparency-dev's corruptInclusionProof, plus a few more; (desc, index, size, proof, root, leaf)."""
    probes = [
        ("index - 1", index - 1, size, proof, root, leaf),
        ("index + 1", index + 1, size, proof, root, leaf),
        ("index ^ 2", index ^ 2, size, proof, root, leaf),
        ("index far beyond", index + 1000, size, proof, root, leaf),
        ("size * 2", index, size * 2, proof, root, leaf),
        ("size / 2", index, size // 2, proof, root, leaf),
        ("size 0", index, 0, proof, root, leaf),
        ("size huge", index, 2**64 + 3, proof, root, leaf),
        ("wrong leaf", index, size, proof, root, leaf_hash(b"WrongLeaf")),
        ("leaf of wrong length", index, size, proof, root, b"WrongLeaf"),
        ("empty root", index, size, proof, EMPTY_ROOT, leaf),
        ("random root", index, size, proof, SOME_HASH, leaf),
        ("root of wrong length", index, size, proof, root[:-1], leaf),
        ("trailing garbage", index, size, [*proof, b""], root, leaf),
        ("trailing root", index, size, [*proof, root], root, leaf),
        ("preceding garbage", index, size, [b"", *proof], root, leaf),
        ("preceding root", index, size, [root, *proof], root, leaf),
    ]
    # A size off by one with the root of a tree of that size (a log lying about where a leaf is).
    for other in (size - 1, size + 1):
        if 0 < other <= len(LEAF_HASHES):
            probes.append((f"size {other}", index, other, proof, ROOTS[other], leaf))
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = flip(bad[i], 3)
        probes.append((f"modified proof[{i}] bit 3", index, size, bad, root, leaf))
        short = list(proof)
        short[i] = short[i][:-1]
        probes.append((f"proof[{i}] of wrong length", index, size, short, root, leaf))
    if proof:
        probes.append(("removed last component", index, size, proof[:-1], root, leaf))
        probes.append(("removed first component", index, size, proof[1:], root, leaf))
        probes.append(("empty proof", index, size, [], root, leaf))
    if len(proof) > 1:
        probes.append(("inserted component", index, size, [proof[0], SOME_HASH, *proof[1:]], root, leaf))
    return probes


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_reference_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    assert inclusion_proof(LEAF_HASHES, index, size) == proof
    verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size])
    accepted = [
        desc
        for desc, i, n, p, root, leaf in inclusion_probes(index, size, proof, ROOTS[size], LEAF_HASHES[index])
        if not rejected(lambda: verify_inclusion(leaf, i, n, p, root))  # noqa: B023
    ]
    assert accepted == []


def consistency_probes(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """transparency-dev's corruptConsistencyProof, and more: (desc, size1, size2, root1, root2, proof)."""
    probes = [
        ("size1 - 1", size1 - 1, size2, root1, root2, proof),
        ("size1 + 1", size1 + 1, size2, root1, root2, proof),
        ("size1 ^ 2", size1 ^ 2, size2, root1, root2, proof),
        ("size1 0", 0, size2, root1, root2, proof),
        ("size1 > size2", size2 + 1, size2, root1, root2, proof),
        ("size2 * 2", size1, size2 * 2, root1, root2, proof),
        ("size2 / 2", size1, size2 // 2, root1, root2, proof),
        ("size2 huge", size1, 2**64, root1, root2, proof),
        ("wrong root1", size1, size2, SOME_HASH, root2, proof),
        ("wrong root2", size1, size2, root1, SOME_HASH, proof),
        ("root1 of wrong length", size1, size2, b"WrongRoot", root2, proof),
        ("root2 of wrong length", size1, size2, root1, b"WrongRoot", proof),
        ("swapped roots", size1, size2, root2, root1, proof),
        ("empty proof", size1, size2, root1, root2, []),
        ("trailing garbage", size1, size2, root1, root2, [*proof, b""]),
        ("trailing root1", size1, size2, root1, root2, [*proof, root1]),
        ("trailing root2", size1, size2, root1, root2, [*proof, root2]),
        ("preceding garbage", size1, size2, root1, root2, [b"", *proof]),
        ("preceding root1", size1, size2, root1, root2, [root1, *proof]),
        ("preceding root2", size1, size2, root1, root2, [root2, *proof]),
        ("preceding proof[0]", size1, size2, root1, root2, [proof[0], *proof]),
        ("truncated proof", size1, size2, root1, root2, proof[:-1]),
        ("missing first node", size1, size2, root1, root2, proof[1:]),
    ]
    for other in (size2 - 1, size2 + 1):
        if size1 <= other <= len(LEAF_HASHES) and other != size2:
            probes.append((f"size2 {other}", size1, other, root1, ROOTS[other], proof))
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = flip(bad[i], 4)
        probes.append((f"modified proof[{i}] bit 4", size1, size2, root1, root2, bad))
        short = list(proof)
        short[i] = short[i] + b"\x00"
        probes.append((f"proof[{i}] of wrong length", size1, size2, root1, root2, short))
    return probes


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY_VECTORS)
def test_reference_consistency_proofs(size1: int, size2: int, proof: list[bytes]) -> None:
    assert consistency_proof(LEAF_HASHES, size1, size2) == proof
    verify_consistency(size1, size2, ROOTS[size1], ROOTS[size2], proof)
    if not proof:  # as in transparency-dev, probes are for non-trivial proofs
        return
    accepted = [
        desc
        for desc, s1, s2, r1, r2, p in consistency_probes(size1, size2, ROOTS[size1], ROOTS[size2], proof)
        if not rejected(lambda: verify_consistency(s1, s2, r1, r2, p))  # noqa: B023
    ]
    assert accepted == []


def test_inclusion_single_entry() -> None:
    # transparency-dev TestVerifyInclusionSingleEntry: the root of a 1-leaf tree is the leaf hash.
    hash_ = leaf_hash(b"data")
    verify_inclusion(hash_, 0, 1, [], hash_)
    for leaf, root in ((hash_, b""), (b"", hash_), (b"", b"")):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, 0, 1, [], root)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_empty_proof_probes(index: int, size: int) -> None:
    # transparency-dev TestVerifyInclusion's probes of impossible or mismatched small trees.
    for leaf, root in ((SOME_HASH, b""), (b"", EMPTY_ROOT), (SOME_HASH, EMPTY_ROOT)):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, [], root)


R1, R2 = leaf_hash(b"one"), leaf_hash(b"two")


@pytest.mark.parametrize(
    ("size1", "size2", "root1", "root2", "proof", "ok"),
    [
        # Adapted from transparency-dev TestVerifyConsistency; where it took "don't care" roots for
        # size 0 we require the empty-tree root (see the merkle module docstring).
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (0, 0, EMPTY_ROOT, R2, [], False),
        (0, 0, R1, R1, [], False),
        (0, 1, EMPTY_ROOT, R2, [], True),
        (0, 5, EMPTY_ROOT, R2, [], True),
        (0, 1, R1, R2, [], False),
        (0, 1, EMPTY_ROOT, R2, [EMPTY_ROOT], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, R2, R2, [], True),
        (1, 1, R1, R2, [], False),
        (5, 5, R1, R2, [], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 0, R1, R2, [], False),
        (2, 1, R1, R2, [], False),
        (1, 2, R1, R2, [], False),
        (-1, 2, R1, R2, [], False),
    ],
)
def test_consistency_trivial_cases(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes], ok: bool
) -> None:
    if ok:
        verify_consistency(size1, size2, root1, root2, proof)
    else:
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, root1, root2, proof)


# -- every small proof ------------------------------------------------------------------------------


def test_every_inclusion_proof_up_to_40() -> None:
    for size in range(1, 41):
        root = LOG_ROOTS[size]
        for index in range(size):
            proof = inclusion_proof(LOG, index, size)
            verify_inclusion(LOG[index], index, size, proof, root)
            probes: list[tuple[str, bytes, int, list[bytes], bytes]] = [  # (desc, leaf, index, proof, root)
                ("other leaf", LOG[index + 1], index, proof, root),
                ("flipped root", LOG[index], index, proof, flip(root)),
                ("index = size", LOG[index], size, proof, root),
                ("appended node", LOG[index], index, [*proof, root], root),
                ("prepended node", LOG[index], index, [root, *proof], root),
            ]
            for i in range(len(proof)):
                flipped = [flip(p, 0) if j == i else p for j, p in enumerate(proof)]
                probes.append((f"bit in node {i}", LOG[index], index, flipped, root))
                probes.append((f"without node {i}", LOG[index], index, proof[:i] + proof[i + 1 :], root))
            accepted = [
                desc
                for desc, leaf, i, p, r in probes
                if not rejected(lambda: verify_inclusion(leaf, i, size, p, r))  # noqa: B023
            ]
            assert accepted == [], (index, size)


def test_every_consistency_proof_up_to_40() -> None:
    for new in range(41):
        for old in range(new + 1):
            proof = consistency_proof(LOG, old, new)
            old_root, new_root = LOG_ROOTS[old], LOG_ROOTS[new]
            verify_consistency(old, new, old_root, new_root, proof)
            if old in (0, new):
                assert proof == []
                continue
            assert proof, (old, new)
            probes: list[list[bytes]] = [[*proof, SOME_HASH], [SOME_HASH, *proof], proof[1:], proof[:-1]]
            probes += [[flip(p, 1) if j == i else p for j, p in enumerate(proof)] for i in range(len(proof))]
            for bad in probes:
                assert rejected(lambda: verify_consistency(old, new, old_root, new_root, bad)), (old, new)  # noqa: B023
            assert rejected(lambda: verify_consistency(old, new, flip(old_root), new_root, proof))  # noqa: B023
            assert rejected(lambda: verify_consistency(old, new, old_root, flip(new_root), proof))  # noqa: B023
            assert rejected(lambda: verify_consistency(old, new, new_root, old_root, proof))  # noqa: B023
            assert rejected(lambda: verify_consistency(new, old, new_root, old_root, proof))  # noqa: B023


def test_proofs_of_a_prefix_ignore_later_leaves() -> None:
    # The tree of the first `size` hashes: hashes past it must not matter.
    assert inclusion_proof(LOG, 3, 7) == inclusion_proof(LOG[:7], 3, 7)
    assert consistency_proof(LOG, 3, 7) == consistency_proof(LOG[:7], 3, 7)


# -- messages and errors ----------------------------------------------------------------------------


def test_error_messages_say_what_is_wrong() -> None:
    proof = inclusion_proof(LOG, 2, 8)
    with pytest.raises(ProofError, match="index 9 beyond tree size 8"):
        verify_inclusion(LOG[2], 9, 8, proof, LOG_ROOTS[8])
    with pytest.raises(ProofError, match="inclusion proof has 2 extra nodes"):
        verify_inclusion(LOG[2], 2, 8, [*proof, SOME_HASH, SOME_HASH], LOG_ROOTS[8])
    with pytest.raises(ProofError, match="inclusion proof is missing 1 node"):
        verify_inclusion(LOG[2], 2, 8, proof[:-1], LOG_ROOTS[8])
    with pytest.raises(ProofError, match="root mismatch"):
        verify_inclusion(LOG[3], 2, 8, proof, LOG_ROOTS[8])
    with pytest.raises(ProofError, match="proof node 1 is 31 bytes"):
        verify_inclusion(LOG[2], 2, 8, [proof[0], proof[1][:-1], proof[2]], LOG_ROOTS[8])
    cons = consistency_proof(LOG, 3, 8)
    with pytest.raises(ProofError, match="old size 9 > new size 8"):
        verify_consistency(9, 8, LOG_ROOTS[8], LOG_ROOTS[8], [])
    with pytest.raises(ProofError, match="same tree size 8 with different roots"):
        verify_consistency(8, 8, LOG_ROOTS[7], LOG_ROOTS[8], [])
    with pytest.raises(ProofError, match="old root mismatch"):
        verify_consistency(3, 8, LOG_ROOTS[2], LOG_ROOTS[8], cons)
    with pytest.raises(ProofError, match="new root mismatch"):
        verify_consistency(3, 8, LOG_ROOTS[3], LOG_ROOTS[7], cons)
    with pytest.raises(ProofError, match="consistency proof has 1 extra node "):
        verify_consistency(3, 8, LOG_ROOTS[3], LOG_ROOTS[8], [*cons, SOME_HASH])


def test_proof_error_is_a_signature_error() -> None:
    with pytest.raises(SignatureInvalid) as info:
        verify_inclusion(LOG[0], 0, 2, [], LOG_ROOTS[2])
    assert isinstance(info.value, ProofError)
    assert info.value.code == "signature_invalid"


def test_building_proofs_rejects_bad_arguments() -> None:
    for index, size in ((-1, 4), (4, 4), (0, 0), (0, 65)):
        with pytest.raises(ValueError):
            inclusion_proof(LOG, index, size)
    for old, new in ((5, 4), (-1, 4), (1, 65)):
        with pytest.raises(ValueError):
            consistency_proof(LOG, old, new)
    with pytest.raises(ValueError, match="leaf hash 1 is 3 bytes"):
        root_from_leaf_hashes([LOG[0], b"abc"])


# -- the frontier -----------------------------------------------------------------------------------


def test_frontier_root_matches_every_size_to_70() -> None:
    frontier = Frontier()
    assert frontier.root() == EMPTY_ROOT
    for size in range(1, 71):
        frontier.append(LOG[(size - 1) % len(LOG)])
        leaves = [LOG[i % len(LOG)] for i in range(size)]
        assert frontier.size == size
        assert len(frontier.hashes) == size.bit_count()
        assert frontier.root() == root_from_leaf_hashes(leaves), size
        again = Frontier.from_bytes(frontier.to_bytes())
        assert again == frontier and again.root() == frontier.root()
        assert len(frontier.to_bytes()) == 8 + 32 * size.bit_count()


def test_frontier_large_sizes() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(20_000)]
    frontier = Frontier()
    checkpoints = {1023, 1024, 1025, 4096, 12_345, 16_384, 20_000}
    for size, hash_ in enumerate(leaves, start=1):
        frontier.append(hash_)
        if size in checkpoints:
            assert frontier.root() == root_from_leaf_hashes(leaves[:size]), size


def test_frontier_encoding() -> None:
    frontier = Frontier()
    for hash_ in LOG[:5]:
        frontier.append(hash_)
    data = frontier.to_bytes()
    assert data[:8] == (5).to_bytes(8, "big")
    assert data[8:] == root_from_leaf_hashes(LOG[:4]) + LOG[4]
    assert Frontier.from_bytes(Frontier().to_bytes()) == Frontier()
    for bad in (b"", data[:7], data[:-1], data + b"\x00", (7).to_bytes(8, "big") + data[8:]):
        with pytest.raises(ValueError):
            Frontier.from_bytes(bad)


def test_frontier_constructor_validates() -> None:
    Frontier(3, [SOME_HASH, SOME_HASH])
    for size, hashes in ((3, [SOME_HASH]), (1, [SOME_HASH[:-1]]), (-1, []), (2**64, [SOME_HASH])):
        with pytest.raises(ValueError):
            Frontier(size, hashes)
    with pytest.raises(ValueError):
        Frontier().append(b"short")


def test_frontier_copy_is_independent() -> None:
    frontier = Frontier()
    frontier.append(LOG[0])
    copy = frontier.copy()
    copy.append(LOG[1])
    assert frontier.size == 1 and copy.size == 2
    assert frontier.root() == LOG[0]
    assert copy.root() == LOG_ROOTS[2]
    hashes = frontier.hashes
    hashes.clear()  # a copy: the frontier is unchanged
    assert frontier.size == 1 and frontier.hashes == [LOG[0]]


# -- speed ------------------------------------------------------------------------------------------


def test_100k_leaves_are_fast() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(100_000)]
    started = time.perf_counter()
    root = root_from_leaf_hashes(leaves)
    assert time.perf_counter() - started < 1.0
    started = time.perf_counter()
    proof = inclusion_proof(leaves, 77_777, 100_000)
    assert time.perf_counter() - started < 0.5
    verify_inclusion(leaves[77_777], 77_777, 100_000, proof, root)
    started = time.perf_counter()
    cons = consistency_proof(leaves, 65_537, 100_000)
    assert time.perf_counter() - started < 0.5
    verify_consistency(65_537, 100_000, root_from_leaf_hashes(leaves[:65_537]), root, cons)


def test_batch_proofs_from_a_frontier_match_proofs_from_the_whole_log() -> None:
    """`inclusion_proofs_after` (how a batch's proofs are made without reading the log) gives the
    same PATH as `inclusion_proof` over every leaf, for every split point and leaf."""
    import hashlib

    from mcp_server.ledger import merkle as m

    leaves = [hashlib.sha256(bytes([i % 256, i // 256])).digest() for i in range(70)]
    for size in range(1, 70):
        for start in range(size):
            frontier = m.Frontier()
            for leaf in leaves[:start]:
                frontier.append(leaf)
            indices = list(range(start, size))
            got = m.inclusion_proofs_after(frontier, leaves[start:size], indices)
            for index in indices:
                assert got[index] == m.inclusion_proof(leaves, index, size), (size, start, index)


def test_consistency_proofs_from_a_frontier_match_proofs_from_the_whole_log() -> None:
    """`consistency_proof_after` (what the log sends a witness without reading the log) gives the
    same PROOF as `consistency_proof` over every leaf, for every pair of sizes."""
    import hashlib

    from mcp_server.ledger import merkle as m

    leaves = [hashlib.sha256(bytes([i % 256, i // 256])).digest() for i in range(70)]
    for new in range(0, 70):
        for old in range(new + 1):
            frontier = m.Frontier()
            for leaf in leaves[:old]:
                frontier.append(leaf)
            got = m.consistency_proof_after(frontier, leaves[old:new])
            assert got == m.consistency_proof(leaves, old, new), (old, new)
