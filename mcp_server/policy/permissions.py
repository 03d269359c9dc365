"""Matching a principal against a MAML document's permission entries (grammar: docs/maml.md §4).

    *                 any authenticated caller (its scopes still apply)
    agent://<sub>     the caller whose `sub` is <sub>
    scope:<scope>     a caller holding that scope
    role:<role>       a caller holding that role
    gateway://<name>  any caller coming through the server named <name> (this server's name)

A trailing `*` makes an entry a prefix match (`agent://team-*`, `scope:maml:*`). No entry, no access.
"""

from __future__ import annotations

from collections.abc import Iterable

from mcp_server.auth.principal import Principal


def _match(pattern: str, value: str) -> bool:
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _any(pattern: str, values: Iterable[str]) -> bool:
    return any(_match(pattern, v) for v in values)


def admits(entries: Iterable[str], principal: Principal, gateway: str) -> bool:
    """True when some entry names the principal."""
    for entry in entries:
        if entry == "*":
            return True
        kind, _, rest = entry.partition(":")
        if entry.startswith("agent://"):
            if _match(entry.removeprefix("agent://"), principal.sub):
                return True
        elif entry.startswith("gateway://"):
            if _match(entry.removeprefix("gateway://"), gateway):
                return True
        elif kind == "scope":
            if _any(rest, principal.scopes):
                return True
        elif kind == "role" and _any(rest, principal.roles):
            return True
    return False
