"""RFC 9162 (Certificate Transparency v2) Merkle tree hashes and proofs, over SHA-256.

The log is a list of leaf hashes. The tree over its first n entries has the Merkle Tree Hash (MTH)
of RFC 9162 section 2.1.1:

    MTH({})    = SHA-256()                                            EMPTY_ROOT
    leaf       = SHA-256(0x00 || data)                                leaf_hash
    MTH(D[n])  = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))          node_hash; k is the largest
                                                                      power of two smaller than n

The 0x00 / 0x01 prefixes keep a leaf from ever passing for an interior node. Everything below works
on leaf *hashes*: the caller hashes its leaf bytes once with `leaf_hash` and stores the result.

- `root_from_leaf_hashes` computes MTH level by level (pair neighbours, carry an odd last node up),
  which builds the same left-heavy tree as the recursive definition with O(n) hashes and no
  recursion.
- `Frontier` is the tree's compact range: the roots of the perfect subtrees that the leaves form from
  left to right, one per set bit of the size. Appending a leaf and computing the root need nothing
  else, so the ledger keeps the frontier in one column (`to_bytes`) instead of re-reading leaves.
- `inclusion_proof` and `consistency_proof` build the proofs of RFC 9162 2.1.3.1 (PATH) and 2.1.4.1
  (PROOF / SUBPROOF); `verify_inclusion` and `verify_consistency` check them with the algorithms of
  2.1.3.2 and 2.1.4.2, step by step. Before running them the verifiers compute the exact proof length
  (as transparency-dev/merkle does), so a proof of the wrong length is reported as "N extra nodes" or
  "missing N nodes" rather than as an unexplained root mismatch.

Trivial consistency cases, which RFC 9162 leaves out (its verification assumes 0 < old < new):
equal sizes need an empty proof and equal roots. An empty old tree is a prefix of every tree, so it is
consistent with any new tree through an empty proof, provided that the old root really is EMPTY_ROOT.
(transparency-dev/merkle's current verifier refuses size 0 outright and its older one accepted it
whatever the old root; checking the root is the strict reading of "the empty tree".)

Verification takes untrusted input, so every failure there is a `ProofError` (code
"signature_invalid"), never an IndexError or a quiet False. Proof *generation* takes the log's own
data: bad arguments there are programming errors and raise ValueError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mcp_server.errors import SignatureInvalid

HASH_SIZE = 32
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_SIZE_BYTES = 8  # Frontier.to_bytes: the tree size as an unsigned 64-bit big-endian integer
_MAX_SIZE = 1 << (8 * _SIZE_BYTES)


class ProofError(SignatureInvalid):
    """An inclusion or consistency proof does not hold; the code stays "signature_invalid"."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH of the tree whose leaves have these hashes; EMPTY_ROOT for no leaves."""
    _check_leaf_hashes(hashes, len(hashes))
    if not hashes:
        return EMPTY_ROOT
    return _subtree_root(hashes, 0, len(hashes))


# -- the compact range ------------------------------------------------------------------------------


class Frontier:
    """The compact range of an append-only tree: enough to append leaves and compute the root.

    `hashes` are the roots of the perfect subtrees covering the leaves, largest (leftmost) first: one
    for each set bit of `size`, so at most 64 hashes. Appending a leaf merges the trailing subtrees
    of equal height, like incrementing a binary counter carries.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: list[bytes] | None = None) -> None:
        nodes = [] if hashes is None else list(hashes)
        if not 0 <= size < _MAX_SIZE:
            raise ValueError(f"tree size {size} is outside 0..2^64-1")
        if len(nodes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} hashes, not {len(nodes)}")
        for position, node in enumerate(nodes):
            if len(node) != HASH_SIZE:
                raise ValueError(f"frontier hash {position} is {len(node)} bytes; hashes are {HASH_SIZE}")
        self._size = size
        self._hashes = nodes

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        return list(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf_hash)} bytes; hashes are {HASH_SIZE}")
        if self._size + 1 >= _MAX_SIZE:
            raise ValueError("tree size would exceed 2^64-1")
        node, carry = leaf_hash, self._size
        while carry & 1:
            node = node_hash(self._hashes.pop(), node)
            carry >>= 1
        self._hashes.append(node)
        self._size += 1

    def root(self) -> bytes:
        """MTH of the tree: the subtree roots folded from the right (RFC 9162's right part is MTH too)."""
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            root = node_hash(left, root)
        return root

    def to_bytes(self) -> bytes:
        """8-byte big-endian size, then the subtree roots (32 bytes each), largest first."""
        return self._size.to_bytes(_SIZE_BYTES, "big") + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        if len(data) < _SIZE_BYTES:
            raise ValueError(f"frontier encoding is {len(data)} bytes; it starts with an 8-byte size")
        size = int.from_bytes(data[:_SIZE_BYTES], "big")
        body = data[_SIZE_BYTES:]
        expected = size.bit_count() * HASH_SIZE
        if len(body) != expected:
            raise ValueError(
                f"frontier of size {size} needs {size.bit_count()} hashes ({expected} bytes), "
                f"got {len(body)} bytes"
            )
        return cls(size, [body[at : at + HASH_SIZE] for at in range(0, len(body), HASH_SIZE)])

    def copy(self) -> Frontier:
        return Frontier(self._size, self._hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()[:16]}...)"


# -- building proofs --------------------------------------------------------------------------------


def inclusion_proof(hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 2.1.3.1 over the first `size` leaf hashes, lowest node first."""
    _check_leaf_hashes(hashes, size)
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside the tree of size {size}")
    siblings: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append(_subtree_root(hashes, lo + k, hi))
            hi = lo + k
        else:
            siblings.append(_subtree_root(hashes, lo, lo + k))
            lo += k
    siblings.reverse()  # PATH appends each sibling after the path below it
    return siblings


def inclusion_proof_after(frontier: Frontier, tail: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) for a leaf appended after `frontier`: n = frontier.size + len(tail) and
    frontier.size <= index < n, from the frontier of the first leaves and the leaf hashes after it.

    This is how a batch's proofs are made without reading the log: every node of the path that lies
    left of the batch is a root of the frontier. (An aligned subtree inside D[0:frontier.size] whose
    parent reaches past it is one of the frontier's subtrees, and such are the only ones the path of
    a later leaf meets, directly or inside a sibling that straddles the frontier's end.)
    """
    return inclusion_proofs_after(frontier, tail, [index])[index]


def inclusion_proofs_after(
    frontier: Frontier, tail: Sequence[bytes], indices: Sequence[int]
) -> dict[int, list[bytes]]:
    """`inclusion_proof_after` for several leaves of one batch, sharing the subtree roots: O(len(tail))
    hashes in all rather than per proof."""
    start, size = frontier.size, frontier.size + len(tail)
    for index in indices:
        if not start <= index < size:
            raise ValueError(f"index {index} is outside the leaves {start}..{size - 1} after the frontier")
    root = _RangeRoots(frontier, tail).root

    proofs: dict[int, list[bytes]] = {}
    for index in indices:
        siblings: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                siblings.append(root(lo + k, hi))
                hi = lo + k
            else:
                siblings.append(root(lo, lo + k))
                lo += k
        siblings.reverse()
        proofs[index] = siblings
    return proofs


def consistency_proof_after(frontier: Frontier, tail: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) with m = frontier.size and n = m + len(tail), from the frontier of the old
    tree and the leaf hashes appended since: what a log sends a witness, without reading the log.

    Every node SUBPROOF takes from inside D[0:m] is one whose parent reaches past m, so it is one of
    the frontier's subtrees (see `inclusion_proof_after`)."""
    old, new = frontier.size, frontier.size + len(tail)
    if old in (0, new):
        return []
    root = _RangeRoots(frontier, tail).root
    siblings: list[bytes] = []
    lo, hi, m = 0, new, old
    complete = True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            siblings.append(root(lo + k, hi))
            hi = lo + k
        else:
            siblings.append(root(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    proof = [] if complete else [root(lo, hi)]
    proof.extend(reversed(siblings))
    return proof


class _RangeRoots:
    """MTH of aligned ranges of a tree known as a frontier and the leaf hashes after it, memoised."""

    def __init__(self, frontier: Frontier, tail: Sequence[bytes]) -> None:
        _check_leaf_hashes(tail, len(tail))
        self.start = frontier.size
        self.tail = tail
        self.nodes: dict[tuple[int, int], bytes] = {}
        lo = 0
        for node in frontier.hashes:
            width = 1 << (self.start - lo).bit_length() - 1
            self.nodes[(lo, lo + width)] = node
            lo += width

    def root(self, lo: int, hi: int) -> bytes:
        found = self.nodes.get((lo, hi))
        if found is not None:
            return found
        if hi <= self.start:
            raise ValueError(f"leaves {lo}..{hi - 1} are inside the frontier but not one of its subtrees")
        if hi - lo == 1:
            node = self.tail[lo - self.start]
        else:
            k = _split(hi - lo)
            node = node_hash(self.root(lo, lo + k), self.root(lo + k, hi))
        self.nodes[(lo, hi)] = node
        return node


def consistency_proof(hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 2.1.4.1; empty when there is nothing to prove."""
    _check_leaf_hashes(hashes, new_size)
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} is outside 0..{new_size}")
    if old_size in (0, new_size):
        return []
    siblings: list[bytes] = []
    lo, hi, m = 0, new_size, old_size  # m counts the old tree's leaves within D[lo:hi]
    complete = True  # SUBPROOF's b: the old tree's root is a node the verifier already has
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            siblings.append(_subtree_root(hashes, lo + k, hi))
            hi = lo + k
        else:
            siblings.append(_subtree_root(hashes, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    proof = [] if complete else [_subtree_root(hashes, lo, hi)]
    proof.extend(reversed(siblings))
    return proof


# -- verifying proofs -------------------------------------------------------------------------------


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Return if `proof` shows leaf `index` of the tree of `size` leaves has `leaf_hash`, else raise."""
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    nodes = _checked_proof(proof)
    if index < 0 or size < 0:
        raise ProofError(f"index {index} and size {size} must not be negative")
    # RFC 9162 2.1.3.2, step 1.
    if index >= size:
        raise ProofError(f"index {index} beyond tree size {size}")
    _check_length("inclusion", len(nodes), _inclusion_length(index, size))
    # Steps 2 to 4.
    fn, sn, r = index, size - 1, leaf_hash
    for p in nodes:
        if sn == 0:
            raise ProofError("inclusion proof goes on past the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    # Step 5.
    if sn != 0:
        raise ProofError("inclusion proof stops short of the root")
    if r != root:
        raise ProofError(f"root mismatch: the proof leads to {r.hex()}, not {root.hex()}")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Return if `proof` shows the tree (old_size, old_root) is a prefix of (new_size, new_root)."""
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    nodes = _checked_proof(proof)
    if old_size < 0 or new_size < 0:
        raise ProofError(f"tree sizes {old_size} and {new_size} must not be negative")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} > new size {new_size}: a log never shrinks")
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise ProofError(f"a tree of size 0 has root {EMPTY_ROOT.hex()}, not {old_root.hex()}")
    if old_size == new_size:
        if nodes:
            raise ProofError(f"consistency proof between equal sizes must be empty, has {len(nodes)} nodes")
        if old_root != new_root:
            raise ProofError(f"same tree size {old_size} with different roots")
        return
    if old_size == 0:
        if nodes:
            raise ProofError(f"consistency proof from the empty tree must be empty, has {len(nodes)} nodes")
        return
    # RFC 9162 2.1.4.2, step 1; then the exact length, to say what is wrong with a wrong one.
    if not nodes:
        raise ProofError(f"consistency proof from size {old_size} to {new_size} is empty")
    _check_length("consistency", len(nodes), _consistency_length(old_size, new_size))
    # Step 2.
    path = [old_root, *nodes] if old_size & (old_size - 1) == 0 else list(nodes)
    # Steps 3 to 5.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof goes on past the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    # Step 7.
    if sn != 0:
        raise ProofError("consistency proof stops short of the root")
    if fr != old_root:
        raise ProofError(f"old root mismatch: the proof leads to {fr.hex()}, not {old_root.hex()}")
    if sr != new_root:
        raise ProofError(f"new root mismatch: the proof leads to {sr.hex()}, not {new_root.hex()}")


# -- helpers ----------------------------------------------------------------------------------------


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): where MTH splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of hashes[lo:hi] (lo < hi), level by level: pair neighbours, carry an odd last node up."""
    level = list(hashes[lo:hi])
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


def _inclusion_length(index: int, size: int) -> int:
    """Nodes in PATH(index, D[size]): the levels where the paths to `index` and to the last leaf
    differ (each has a sibling), plus one left sibling per set bit above that on the right border."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_length(old_size: int, new_size: int) -> int:
    """Nodes in PROOF(old_size, D[new_size]), 0 < old_size < new_size: the inclusion path of the old
    tree's last leaf, less the levels inside the old tree's rightmost perfect subtree, plus that
    subtree's root unless it is the whole old tree (then the verifier has it as old_root)."""
    shift = (old_size & -old_size).bit_length() - 1
    seed = 0 if old_size == 1 << shift else 1
    return seed + _inclusion_length(old_size - 1, new_size) - shift


def _check_length(kind: str, got: int, want: int) -> None:
    if got > want:
        extra = got - want
        raise ProofError(f"{kind} proof has {extra} extra node{'s' if extra > 1 else ''} (expected {want})")
    if got < want:
        missing = want - got
        raise ProofError(
            f"{kind} proof is missing {missing} node{'s' if missing > 1 else ''} (expected {want})"
        )


def _check_hash(what: str, value: bytes) -> None:
    if not isinstance(value, bytes):
        raise ProofError(f"{what} is a {type(value).__name__}, not bytes")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes; hashes are {HASH_SIZE}")


def _checked_proof(proof: Sequence[bytes]) -> list[bytes]:
    nodes = list(proof)
    for position, node in enumerate(nodes):
        _check_hash(f"proof node {position}", node)
    return nodes


def _check_leaf_hashes(hashes: Sequence[bytes], size: int) -> None:
    if not 0 <= size <= len(hashes):
        raise ValueError(f"tree size {size} is outside 0..{len(hashes)} (the leaf hashes given)")
    for position in range(size):
        if len(hashes[position]) != HASH_SIZE:
            raise ValueError(f"leaf hash {position} is {len(hashes[position])} bytes; hashes are {HASH_SIZE}")
