"""Transparency log trust policies, c2sp.org/tlog-policy, with ML-DSA-44 keys.

A policy file ("Policy file syntax and structure") is lines of items separated by spaces and tabs;
empty lines and lines starting with "#" (after optional whitespace) are ignored:

    log <vkey> [<url>]                    the vkey's key name is the log's origin ("Defining a log")
    witness <name> <vkey> [<url>]         <url>: the witness's submission prefix ("Defining a witness")
    group <name> all|any|<k> <name>...    at least k of the n members witnessed ("Defining a witness group")
    quorum <name>                         exactly one; <name> a witness, a group or `none`

Names are defined before they are used (so groups can't be circular), witnesses and groups share one
namespace, `none` is predefined and can't be a member, a member is listed at most once, and 1 <= k <= n.
Two logs (or two witnesses) with the same public key are refused ("Duplicate logs ... are not
allowed"). The file is octets ("Character set"): tab, newline, 0x20-0x7E and 0x80-0xFF only; names
are compared as opaque octet strings (decoded with surrogateescape, so distinct bytes stay distinct).

Keys. This package's logs sign their checkpoints in the ML-DSA-44 cosignature format of
c2sp.org/tlog-cosignature (tlog-checkpoint, "Signatures": "Logs SHOULD use ML-DSA-44 cosignatures"),
and witnesses cosign in it, so every vkey here has signature type 0x06 (`cosignature.parse_vkey`).

Limits ("Implementation limits": at least 32 logs, 32 witnesses and 32 groups): `MAX_POLICY_BYTES`,
`MAX_ENTRIES` of each kind and `MAX_MEMBERS` per group. Every problem is a `PolicyError` naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PublicKey

from mcp_server.errors import KeyStoreError, SignatureInvalid
from mcp_server.witness import cosignature
from mcp_server.witness.errors import PolicyError

MAX_POLICY_BYTES = 1 << 20
MAX_ENTRIES = 128  # logs, witnesses, groups: each
MAX_MEMBERS = 128
MAX_URL_CHARS = 2048
NONE = "none"

_ALLOWED_BYTES = re.compile(rb"[^\x09\x0a\x20-\x7e\x80-\xff]")
_WHITESPACE = re.compile(r"[ \t]+")
_THRESHOLD = re.compile(r"[1-9][0-9]{0,5}")


@dataclass(frozen=True)
class Log:
    """A `log` line: `origin` is the vkey's key name, which names the log's signature lines too."""

    origin: str
    public_key: MLDSA44PublicKey = field(repr=False)
    url: str | None
    vkey: str = field(repr=False)
    line: int


@dataclass(frozen=True)
class Witness:
    """A `witness` line: `name` is the policy's name for it; `key_name` (the vkey's key name) is the
    cosigner name of its signature lines; `url` its submission prefix, if given."""

    name: str
    key_name: str
    public_key: MLDSA44PublicKey = field(repr=False)
    url: str | None
    vkey: str = field(repr=False)
    line: int


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]
    line: int


class Policy:
    """A parsed policy. `check` decides whether a signed checkpoint satisfies it."""

    def __init__(
        self, logs: Iterable[Log], witnesses: Iterable[Witness], groups: Iterable[Group], quorum: str
    ) -> None:
        self.logs: tuple[Log, ...] = tuple(logs)
        self.witnesses: tuple[Witness, ...] = tuple(witnesses)
        self.groups: tuple[Group, ...] = tuple(groups)
        self.quorum = quorum
        self._witness_by_name = {w.name: w for w in self.witnesses}
        self._group_by_name = {g.name: g for g in self.groups}

    # -- accessors ------------------------------------------------------------------------------

    def logs_for(self, origin: str) -> list[Log]:
        """The policy's logs with this origin (one per key, e.g. during a key rotation)."""
        return [log for log in self.logs if log.origin == origin]

    def log_vkey(self, origin: str) -> str | None:
        """The vkey of the (first) log with this origin, if the policy lists one."""
        found = self.logs_for(origin)
        return found[0].vkey if found else None

    def witness(self, name: str) -> Witness | None:
        return self._witness_by_name.get(name)

    # -- checking -------------------------------------------------------------------------------

    def check(self, note: str | bytes, origin: str) -> None:
        """Return if `note` is a checkpoint of `origin` that the policy accepts; SignatureInvalid if not.

        tlog-policy, "What is a policy?": "a checkpoint is considered valid if it is signed by any one
        of the listed logs, and it is cosigned by witnesses according to the defined quorum rule".
        When the policy lists logs, one with this origin must have signed the note; a policy with no
        logs ("the appropriate log(s) are known from other context") leaves that to the caller. Every
        cosignature line of a known witness must verify (signed-note: a failing known signature
        rejects the note), and the note's origin line must be `origin`.
        """
        parsed = cosignature.ParsedNote.parse(note)
        if self.logs:
            logs = self.logs_for(origin)
            if not logs:
                raise SignatureInvalid(f"the policy lists no log with origin {origin!r}")
            if not any(parsed.cosignature(log.origin, log.public_key) is not None for log in logs):
                raise SignatureInvalid(f"checkpoint is not signed by the log {origin!r}")
        witnessed = {w.name for w in self.witnesses if parsed.cosignature(w.key_name, w.public_key)}
        if (self.logs or witnessed) and parsed.checkpoint.origin != origin:
            raise SignatureInvalid(f"checkpoint is for origin {parsed.checkpoint.origin!r}, not {origin!r}")
        if not self.satisfied(witnessed):
            have = ", ".join(sorted(witnessed)) or "none"
            raise SignatureInvalid(
                f"checkpoint does not meet the policy's quorum {self.quorum!r} (cosigned by: {have})"
            )

    def satisfied(self, witnessed: set[str]) -> bool:
        """Whether the quorum holds when exactly the witnesses named in `witnessed` cosigned."""
        if self.quorum == NONE:
            return True
        met: dict[str, bool] = {w.name: w.name in witnessed for w in self.witnesses}
        for group in self.groups:  # members precede their groups, so one pass in order suffices
            met[group.name] = sum(met[m] for m in group.members) >= group.threshold
        return met[self.quorum]


# -- parsing --------------------------------------------------------------------------------------


def parse(data: str | bytes) -> Policy:
    """Parse a policy file; PolicyError (with the line number) for anything tlog-policy does not allow."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy is over {MAX_POLICY_BYTES} bytes")
    parser = _Parser()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    for number, line in enumerate(lines, start=1):
        bad = _ALLOWED_BYTES.search(line)
        if bad:
            raise PolicyError(
                f"character 0x{bad.group()[0]:02x} is not allowed (only tab, newline, 0x20-0x7e, 0x80-0xff)",
                line=number,
            )
        parser.line(number, line.decode("utf-8", "surrogateescape"))
    return parser.finish()


class _Parser:
    def __init__(self) -> None:
        self.logs: list[Log] = []
        self.witnesses: list[Witness] = []
        self.groups: list[Group] = []
        self.names: set[str] = set()
        self.quorum: str | None = None
        self.keys: dict[str, dict[bytes, int]] = {"log": {}, "witness": {}}

    def line(self, number: int, text: str) -> None:
        items = _WHITESPACE.split(text.strip(" \t"))
        if items == [""] or items[0].startswith("#"):
            return
        keyword, args = items[0], items[1:]
        if keyword == "log":
            self._log(number, args)
        elif keyword == "witness":
            self._witness(number, args)
        elif keyword == "group":
            self._group(number, args)
        elif keyword == "quorum":
            self._quorum(number, args)
        else:
            raise PolicyError(
                f"unknown keyword {_show(keyword)}; expected log, witness, group or quorum", line=number
            )

    def _log(self, number: int, args: list[str]) -> None:
        if not 1 <= len(args) <= 2:
            raise PolicyError("expected: log <vkey> [<url>]", line=number)
        self._room(number, "log", self.logs)
        origin, key = self._vkey(number, args[0])
        self._unique_key(number, "log", key)
        self.logs.append(Log(origin, key, self._url(number, args), args[0], number))

    def _witness(self, number: int, args: list[str]) -> None:
        if not 2 <= len(args) <= 3:
            raise PolicyError("expected: witness <name> <vkey> [<url>]", line=number)
        self._room(number, "witness", self.witnesses)
        name = self._new_name(number, args[0])
        key_name, key = self._vkey(number, args[1])
        self._unique_key(number, "witness", key)
        self.witnesses.append(Witness(name, key_name, key, self._url(number, args[1:]), args[1], number))

    def _group(self, number: int, args: list[str]) -> None:
        if len(args) < 3:
            raise PolicyError("expected: group <name> all|any|<k> <name>...", line=number)
        self._room(number, "group", self.groups)
        name, kind, members = args[0], args[1], args[2:]
        if len(members) > MAX_MEMBERS:
            raise PolicyError(
                f"group has {len(members)} members; at most {MAX_MEMBERS} are read", line=number
            )
        seen: set[str] = set()
        for member in members:
            if member == NONE:
                raise PolicyError("`none` can't be a group member", line=number)
            if member not in self.names:
                raise PolicyError(f"{_show(member)} is not a witness or group defined above", line=number)
            if member in seen:
                raise PolicyError(f"{_show(member)} is listed twice", line=number)
            seen.add(member)
        if kind == "all":
            threshold = len(members)
        elif kind == "any":
            threshold = 1
        elif _THRESHOLD.fullmatch(kind):
            threshold = int(kind)
            if threshold > len(members):
                raise PolicyError(f"threshold {threshold} is above the {len(members)} members", line=number)
        else:
            raise PolicyError(f"threshold {_show(kind)} is not all, any or a decimal k >= 1", line=number)
        name = self._new_name(number, name)
        self.groups.append(Group(name, threshold, tuple(members), number))

    def _quorum(self, number: int, args: list[str]) -> None:
        if len(args) != 1:
            raise PolicyError("expected: quorum <name>", line=number)
        if self.quorum is not None:
            raise PolicyError("a second quorum line; a policy has exactly one", line=number)
        if args[0] != NONE and args[0] not in self.names:
            raise PolicyError(f"{_show(args[0])} is not a witness or group defined above", line=number)
        self.quorum = args[0]

    def finish(self) -> Policy:
        if self.quorum is None:
            raise PolicyError("policy has no quorum line (use `quorum none` to require no cosignatures)")
        return Policy(self.logs, self.witnesses, self.groups, self.quorum)

    # -- helpers --------------------------------------------------------------------------------

    def _room(self, number: int, kind: str, entries: list[Log] | list[Witness] | list[Group]) -> None:
        if len(entries) >= MAX_ENTRIES:
            raise PolicyError(f"more than {MAX_ENTRIES} {kind} lines", line=number)

    def _new_name(self, number: int, name: str) -> str:
        if name == NONE:
            raise PolicyError("`none` is predefined and can't be redefined", line=number)
        if name in self.names:
            raise PolicyError(f"{_show(name)} is already defined", line=number)
        self.names.add(name)
        return name

    def _vkey(self, number: int, text: str) -> tuple[str, MLDSA44PublicKey]:
        try:
            return cosignature.parse_vkey(text)
        except KeyStoreError as exc:
            raise PolicyError(exc.message, line=number) from None

    def _unique_key(self, number: int, kind: str, key: MLDSA44PublicKey) -> None:
        raw = key.public_bytes_raw()
        earlier = self.keys[kind].get(raw)
        if earlier is not None:
            raise PolicyError(f"the same public key as the {kind} on line {earlier}", line=number)
        self.keys[kind][raw] = number

    def _url(self, number: int, args: list[str]) -> str | None:
        if len(args) < 2:
            return None
        url = args[1]
        if len(url) > MAX_URL_CHARS:
            raise PolicyError(f"URL is over {MAX_URL_CHARS} characters", line=number)
        return url


def _show(text: str) -> str:
    shown = text if len(text) <= 40 else text[:39] + "…"
    return repr(shown)
