"""Which OAuth scopes this server names to clients: in its RFC 9728 metadata (`scopes_supported`)
and in the `scope` of its `WWW-Authenticate` challenges (RFC 6750 section 3; the MCP authorization
spec's scope selection: a client asks for the challenge's `scope`, else for all of `scopes_supported`).

All of it is read from the operations table through the policy (`Policy.offered`: read-only mode and
the tool allow-list already applied), so what is advertised is what is enforced:

- supported: the scope of every offered tool and resource family, and the audit scope;
- baseline: the scopes of the offered operations that neither sign, spend nor change anything (the
  ones annotated `readOnlyHint`). A 401 for a request that names no operation (`initialize`,
  `tools/list`, an SSE stream) asks for these, so a client starts with least privilege and steps up
  (403 `insufficient_scope`) when it calls something more;
- a 401 for a tool call or resource read names the baseline and that operation's scope: a client
  whose token expired gets back what it needs now without losing what it could read;
- a 403 names the scopes the token already holds (of this server's) and the one missing, the MCP
  spec's recommended step-up, so the new token does not lose what the old one granted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mcp_server.policy.access import AUDIT_SCOPE
from mcp_server.policy.operations import ALL_SCOPES

if TYPE_CHECKING:
    from mcp_server.policy.guard import Policy


def _ordered(scopes: Iterable[str]) -> tuple[str, ...]:
    """In the operations table's order (stable, whatever order they were collected in)."""
    wanted = set(scopes)
    return tuple(s for s in ALL_SCOPES if s in wanted)


class ChallengeScopes:
    def __init__(self, policy: Policy) -> None:
        self.offered = policy.offered
        self.supported = _ordered([*(op.scope for op in self.offered.values()), AUDIT_SCOPE])
        self.baseline = _ordered(op.scope for op in self.offered.values() if not op.changes_or_spends)

    def for_operations(self, names: Iterable[str]) -> tuple[str, ...]:
        """What a 401 for a request asking for these operations names: the baseline and their scopes
        (operations this server does not offer add nothing)."""
        needed = [op.scope for name in names if (op := self.offered.get(name)) is not None]
        return _ordered([*self.baseline, *needed])

    def step_up(self, granted: Iterable[str], required: str) -> tuple[str, ...]:
        """What a 403 `insufficient_scope` names: the token's scopes of this server, and `required`."""
        return _ordered([*(s for s in granted if s in self.supported), required])


def scope_param(scopes: Iterable[str]) -> str:
    """The challenge's `scope` value (RFC 6750 3: space-delimited, case-sensitive)."""
    return " ".join(scopes)
