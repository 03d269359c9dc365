"""Who may see whose records: receipts and quantum jobs belong to the caller that made them.

A caller sees its own receipts and jobs (same `agent://<sub>` and same issuer); the scope
`receipts:audit` sees everyone's. Another caller's job looks like no job at all (`not_found`), so
job ids reveal nothing; another caller's receipt is refused (`forbidden`, naming the scope), because
receipt ids are listed to auditors and a refusal there tells an honest caller what it lacks.
"""

from __future__ import annotations

from typing import Protocol

from mcp_server.auth.principal import Principal
from mcp_server.errors import Forbidden

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


def check_receipt(principal: Principal, record: Owned) -> None:
    """Raise `Forbidden` unless the caller may see this receipt."""
    if not may_see(principal, record):
        raise Forbidden(
            f"this receipt is another caller's; seeing it needs the scope {AUDIT_SCOPE}",
            required_scope=AUDIT_SCOPE,
        )


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
