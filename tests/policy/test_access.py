"""Who may see whose receipts and jobs (`mcp_server.policy.access`), without a server."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mcp_server.auth.principal import Principal
from mcp_server.errors import Forbidden, NotFound
from mcp_server.policy import access


@dataclass(frozen=True)
class Record:
    principal: str
    issuer: str


ALICE = Principal(sub="alice", issuer="https://idp.example", scopes=frozenset({"receipts:read"}))
AUDITOR = Principal(sub="audit", issuer="https://idp.example", scopes=frozenset({access.AUDIT_SCOPE}))


def test_a_record_is_its_makers_by_subject_and_issuer() -> None:
    assert access.may_see(ALICE, Record("agent://alice", "https://idp.example"))
    assert not access.may_see(ALICE, Record("agent://alice", "https://other.example"))  # same sub, other idp
    assert not access.may_see(ALICE, Record("agent://bob", "https://idp.example"))
    assert access.may_see(AUDITOR, Record("agent://bob", "https://other.example"))


def test_receipt_listing_filters() -> None:
    assert access.receipt_filter(ALICE, None) == ("agent://alice", "https://idp.example")
    assert access.receipt_filter(ALICE, "agent://alice") == ("agent://alice", "https://idp.example")
    with pytest.raises(Forbidden) as info:
        access.receipt_filter(ALICE, "agent://bob")
    assert info.value.details == {"required_scope": access.AUDIT_SCOPE}
    assert access.receipt_filter(AUDITOR, None) == (None, None)
    assert access.receipt_filter(AUDITOR, "agent://bob") == ("agent://bob", None)


def test_receipt_and_job_checks() -> None:
    """Another caller's receipt answers exactly as an unknown id does: no existence oracle."""
    with pytest.raises(NotFound) as hidden:
        access.check_receipt(ALICE, Record("agent://bob", "https://idp.example"), "r-1")
    assert hidden.value.to_dict() == access.unknown_receipt("r-1").to_dict()
    access.check_receipt(AUDITOR, Record("agent://bob", "https://idp.example"), "r-1")
    assert access.job_owner_filter(ALICE) == "agent://alice"
    assert access.job_owner_filter(AUDITOR) is None
