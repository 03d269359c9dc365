"""Who may see whose records: receipts and quantum jobs belong to the caller that made them.

A caller sees its own receipts and jobs (same `agent://<sub>` and same issuer); the scope
`receipts:audit` sees everyone's. Another caller's receipt or job looks like no receipt or job at all
(`not_found`, the same answer as for an id that does not exist), so ids reveal nothing about what
others did. Asking to list another caller's receipts without the scope is refused (`forbidden`,
naming the scope): that answer does not depend on whether that caller has any.
"""

from __future__ import annotations

from typing import Protocol

from mcp_server.auth.principal import Principal
from mcp_server.errors import Forbidden, NotFound

AUDIT_SCOPE = "receipts:audit"


class Owned(Protocol):
    """A record made by a caller: a receipt or a job."""

    @property
    def principal(self) -> str: ...  # agent://<sub>

    @property
    def issuer(self) -> str: ...


def audits(principal: Principal) -> bool:
    return AUDIT_SCOPE in principal.scopes


def owns(principal: Principal, record: Owned) -> bool:
    return record.principal == principal.uri and record.issuer == principal.issuer


def may_see(principal: Principal, record: Owned) -> bool:
    return audits(principal) or owns(principal, record)


def check_receipt(principal: Principal, record: Owned, receipt_id: str) -> None:
    """Raise `NotFound`, as for an unknown id, unless the caller may see this receipt."""
    if not may_see(principal, record):
        raise unknown_receipt(receipt_id)


def unknown_receipt(receipt_id: str) -> NotFound:
    """What a caller hears about a receipt it may not see, and about one that does not exist."""
    return NotFound(f"no receipt {receipt_id[:64]!r}")


def receipt_filter(principal: Principal, requested: str | None) -> tuple[str | None, str | None]:
    """The (principal, issuer) a receipt listing is restricted to: the caller's own, unless it
    audits (then whatever it asked for, `None` meaning everyone). Asking for another caller's
    receipts without the scope is `Forbidden`."""
    if audits(principal):
        return requested, None
    if requested is not None and requested != principal.uri:
        raise Forbidden(
            f"seeing other callers' receipts needs the scope {AUDIT_SCOPE}", required_scope=AUDIT_SCOPE
        )
    return principal.uri, principal.issuer


def job_owner_filter(principal: Principal) -> str | None:
    """The owner a job listing is restricted to (`None`: everyone's, for auditors). The issuer is
    checked on each row with `may_see`."""
    return None if audits(principal) else principal.uri
