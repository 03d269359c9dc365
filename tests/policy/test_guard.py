"""`Guard` (the policy bound to the trust store and rate limiter) in process: each refusal's error
class, code and details, and what is allowed."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client

from mcp_server.adapters import error_of
from mcp_server.auth import local_issuer
from mcp_server.auth.principal import Principal
from mcp_server.crypto.keys import KeyStore
from mcp_server.crypto.mldsa import Algorithm
from mcp_server.db import open_engine
from mcp_server.errors import (
    Forbidden,
    RateLimited,
    RequestTooLarge,
    SignatureInvalid,
)
from mcp_server.home import example_workflow, open_keys
from mcp_server.maml import parser
from mcp_server.policy.guard import Decision, Guard, Policy, Request
from mcp_server.policy.quota import RateLimiter
from mcp_server.server import build_server
from mcp_server.settings import ALL_SCOPES, Settings
from mcp_server.signing import sign_document

pytestmark = pytest.mark.anyio

LOCAL = Principal(sub="local", issuer="local", scopes=frozenset(ALL_SCOPES), local=True)
EXECUTE_LINE = "  execute: [agent://local, scope:quantum:run]\n"
WRITE_LINE = "  write: [agent://local]\n"
READ_LINE = "  read: [agent://*, scope:maml:read]\n"


def principal(sub: str, *scopes: str) -> Principal:
    return Principal(sub=sub, issuer="test", scopes=frozenset(scopes))


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.fixture
def make_policy(make_settings: Callable[..., Settings]) -> Callable[..., Guard]:
    """A guard with the home's key store (one trusted default key) and no rate limiter."""

    def make(**overrides: Any) -> Guard:
        settings = make_settings(**overrides)
        limits = parser.Limits(max_bytes=settings.max_document_bytes, max_depth=settings.max_yaml_depth)
        return Guard(Policy(settings, limits), open_keys(settings))

    return make


@pytest.fixture
def policy(make_policy: Callable[..., Guard]) -> Guard:
    return make_policy()


def keys_of(policy: Guard) -> KeyStore:
    return policy.keys


# -- 1. offered operations -------------------------------------------------------------------------


async def test_unknown_operation_is_denied_by_default(policy: Guard) -> None:
    with pytest.raises(Forbidden) as info:
        await policy.guard(LOCAL, "delete_everything")
    assert info.value.code == "forbidden"
    assert info.value.details == {"operation": "delete_everything"}
    assert "delete_everything is not offered" in info.value.message
    assert not policy.policy.visible(LOCAL, "delete_everything")


async def test_read_only_refuses_what_signs_or_spends(make_policy: Callable[..., Guard]) -> None:
    policy = make_policy(read_only=True)
    for name in ("sign_maml", "run_quantum_circuit", "cancel_job", "query_openai"):
        with pytest.raises(Forbidden) as info:
            await policy.guard(LOCAL, name)
        assert "read-only" in info.value.message, name
        assert info.value.details == {"operation": name}
        assert not policy.policy.visible(LOCAL, name)
    for name in ("verify_maml", "validate_maml", "maml://workflows", "list_receipts"):
        decision = await policy.guard(LOCAL, name)
        assert decision.operation.name == name
        assert policy.policy.visible(LOCAL, name)


async def test_tool_allow_list(make_policy: Callable[..., Guard]) -> None:
    policy = make_policy(tools=["verify_maml"])
    with pytest.raises(Forbidden) as info:
        await policy.guard(LOCAL, "validate_maml")
    assert "validate_maml is not offered" in info.value.message
    assert "configuration" in info.value.message and "read-only" not in info.value.message
    assert (await policy.guard(LOCAL, "verify_maml")).operation.name == "verify_maml"
    # The allow-list is for tools; resource families stay offered.
    assert (await policy.guard(LOCAL, "maml://workflows")).operation.name == "maml://workflows"
    assert {
        name for name in ("validate_maml", "verify_maml", "sign_maml") if policy.policy.visible(LOCAL, name)
    } == {"verify_maml"}
    assert policy.policy.visible(LOCAL, "maml://workflows")


async def test_refusal_reason_with_read_only_and_allow_list(make_policy: Callable[..., Guard]) -> None:
    policy = make_policy(read_only=True, tools=["verify_maml"])
    with pytest.raises(Forbidden) as info:
        await policy.guard(LOCAL, "validate_maml")
    assert "configuration" in info.value.message


# -- 2. scopes -------------------------------------------------------------------------------------


async def test_missing_scope_names_the_scope(policy: Guard) -> None:
    reader = principal("reader", "maml:read")
    with pytest.raises(Forbidden) as info:
        # The scope is checked first: even a document that is not MAML gets "forbidden".
        await policy.guard(reader, "sign_maml", document="not a maml document")
    assert info.value.details == {"operation": "sign_maml", "required_scope": "maml:sign"}
    assert "maml:sign" in info.value.message
    assert not policy.policy.visible(reader, "sign_maml")
    assert policy.policy.visible(reader, "verify_maml")
    with pytest.raises(Forbidden) as info:
        await policy.guard(reader, "run_quantum_circuit")
    assert info.value.details["required_scope"] == "quantum:run"


# -- 6. document permissions -----------------------------------------------------------------------


async def test_write_permission_excludes_caller(policy: Guard) -> None:
    doc = edit(example_workflow(), WRITE_LINE, "  write: [agent://someone-else]\n")
    with pytest.raises(Forbidden) as info:
        await policy.guard(LOCAL, "sign_maml", document=doc)
    assert info.value.details == {
        "operation": "sign_maml",
        "document_id": parser.parse(doc).id,
        "permission": "write",
    }
    assert "permissions.write" in info.value.message and "agent://local" in info.value.message
    # The unedited example admits agent://local to write.
    decision = await policy.guard(LOCAL, "sign_maml", document=example_workflow())
    assert decision.document is not None and decision.document.id == parser.parse(doc).id


async def test_reading_needs_read_permission(policy: Guard) -> None:
    hidden = edit(
        edit(example_workflow(), READ_LINE, "  read: [agent://someone-else]\n"),
        WRITE_LINE,
        "  write: [agent://someone-else]\n",
    )
    with pytest.raises(Forbidden) as info:
        await policy.guard(LOCAL, "maml://workflows", document=hidden)
    assert info.value.details["permission"] == "read"
    # Only in `write`: reading is allowed too (write implies read).
    writer_only = edit(example_workflow(), READ_LINE, "  read: [agent://someone-else]\n")
    decision = await policy.guard(LOCAL, "maml://workflows", document=writer_only)
    assert decision.document is not None
    # Without a document, the resource family only needs the scope.
    assert (await policy.guard(LOCAL, "maml://workflows")).document is None


# -- 5. execution needs a trusted signature --------------------------------------------------------

RUNNER = principal("local", "quantum:run")


async def test_executing_an_unsigned_workflow_is_refused(policy: Guard) -> None:
    with pytest.raises(SignatureInvalid) as info:
        await policy.guard(RUNNER, "run_quantum_circuit", document=example_workflow())
    assert info.value.code == "signature_invalid"
    assert "sign it first" in info.value.message


async def test_executing_a_trusted_signed_workflow_is_allowed(policy: Guard) -> None:
    signed = sign_document(example_workflow(), keys_of(policy))
    decision = await policy.guard(RUNNER, "run_quantum_circuit", document=signed.signed_document)
    assert isinstance(decision, Decision)
    assert decision.signer_key_id == signed.key_id == keys_of(policy).default_key_id()
    assert decision.principal == RUNNER and decision.operation.name == "run_quantum_circuit"
    assert decision.document is not None and decision.document.id == signed.document_id


async def test_tampered_workflow_is_refused(policy: Guard) -> None:
    signed = sign_document(example_workflow(), keys_of(policy)).signed_document
    tampered = edit(signed, "Prepare a three-qubit", "Prepare a four-qubit")
    with pytest.raises(SignatureInvalid):
        await policy.guard(RUNNER, "run_quantum_circuit", document=tampered)


async def test_a_document_cannot_widen_its_own_execute_list(policy: Guard) -> None:
    mallory = principal("mallory", "quantum:run")
    narrow = edit(example_workflow(), EXECUTE_LINE, "  execute: [agent://local]\n")
    signed = sign_document(narrow, keys_of(policy)).signed_document
    # Validly signed, but its permissions do not admit mallory.
    with pytest.raises(Forbidden) as info:
        await policy.guard(mallory, "run_quantum_circuit", document=signed)
    assert info.value.details["permission"] == "execute"
    # Mallory edits the signed document to admit herself: the signature no longer holds.
    widened = edit(signed, "  execute: [agent://local]\n", "  execute: [agent://local, agent://mallory]\n")
    assert parser.parse(widened).front_matter.signature is not None
    with pytest.raises(SignatureInvalid):
        await policy.guard(mallory, "run_quantum_circuit", document=widened)
    # The signer's own identity is still admitted by the untouched document.
    assert (await policy.guard(RUNNER, "run_quantum_circuit", document=signed)).signer_key_id


async def test_a_key_that_is_not_trusted_does_not_count(policy: Guard) -> None:
    keys = keys_of(policy)
    untrusted = keys.generate(Algorithm.ML_DSA_65, trust=False).key_id
    assert not keys.trust.contains(untrusted)
    signed = sign_document(example_workflow(), keys, key_id=untrusted).signed_document
    with pytest.raises(SignatureInvalid) as info:
        await policy.guard(RUNNER, "run_quantum_circuit", document=signed)
    assert "does not trust" in info.value.message and untrusted in info.value.message


async def test_unsigned_execution_when_configured_off(make_policy: Callable[..., Guard]) -> None:
    policy = make_policy(require_signed_execution=False)
    decision = await policy.guard(RUNNER, "run_quantum_circuit", document=example_workflow())
    assert decision.signer_key_id is None and decision.document is not None
    # The document's own permissions are still applied.
    narrow = edit(example_workflow(), EXECUTE_LINE, "  execute: [agent://someone-else]\n")
    with pytest.raises(Forbidden) as info:
        await policy.guard(RUNNER, "run_quantum_circuit", document=narrow)
    assert info.value.details["permission"] == "execute"


# -- 7. limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "requested", "allowed"),
    [
        (Request(qubits=33), 33, 32),
        (Request(shots=100_001), 100_001, 100_000),
        (Request(max_tokens=5000), 5000, 4096),
        (Request(qubits=1, shots=1, max_tokens=4097), 4097, 4096),
    ],
)
async def test_request_over_the_limits(
    policy: Guard, request_: Request, requested: int, allowed: int
) -> None:
    with pytest.raises(RequestTooLarge) as info:
        await policy.guard(LOCAL, "verify_maml", request=request_)
    assert info.value.code == "request_too_large"
    assert info.value.details == {"requested": requested, "allowed": allowed}
    assert f"({requested} > {allowed})" in info.value.message


async def test_request_at_the_limits_is_allowed(policy: Guard) -> None:
    decision = await policy.guard(
        LOCAL, "verify_maml", request=Request(qubits=32, shots=100_000, max_tokens=4096)
    )
    assert decision.operation.name == "verify_maml"


async def test_configured_shots_limit(make_policy: Callable[..., Guard]) -> None:
    policy = make_policy(max_shots=1000)
    with pytest.raises(RequestTooLarge) as info:
        await policy.guard(LOCAL, "verify_maml", request=Request(shots=1001))
    assert info.value.details == {"requested": 1001, "allowed": 1000}
    # The example workflow requires 1024 shots, over this server's cap: it cannot be run here.
    signed = sign_document(example_workflow(), keys_of(policy)).signed_document
    with pytest.raises(RequestTooLarge) as info:
        await policy.guard(RUNNER, "run_quantum_circuit", document=signed)
    assert info.value.details == {"requested": 1024, "allowed": 1000}
    assert "document requires: shots" in info.value.message


async def test_document_requiring_too_many_qubits(policy: Guard) -> None:
    doc = edit(example_workflow(), "  qubits: 3\n", "  qubits: 64\n")
    signed = sign_document(doc, keys_of(policy)).signed_document
    with pytest.raises(RequestTooLarge) as info:
        await policy.guard(RUNNER, "run_quantum_circuit", document=signed)
    assert info.value.details == {"requested": 64, "allowed": 32}
    assert "document requires: qubits" in info.value.message
    # The signature and the permissions were fine: the limit is the last check.
    ok = sign_document(example_workflow(), keys_of(policy)).signed_document
    assert (await policy.guard(RUNNER, "run_quantum_circuit", document=ok)).signer_key_id


async def test_oversized_document_is_refused_before_parsing(make_policy: Callable[..., Guard]) -> None:
    policy = make_policy(max_document_bytes=4096)
    padded = example_workflow() + "x" * 5000
    garbage = "x" * 5000  # not MAML at all: still "too large", so it was never parsed
    for doc in (padded, garbage, padded.encode()):
        with pytest.raises(RequestTooLarge) as info:
            await policy.guard(LOCAL, "sign_maml", document=doc)
        size = len(doc) if isinstance(doc, bytes) else len(doc.encode())
        assert info.value.details == {"requested": size, "allowed": 4096}
        assert "xxxx" not in str(info.value)


# -- audit -----------------------------------------------------------------------------------------


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "mcp_server.audit"]


async def test_a_denial_is_one_audit_line_without_the_token(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    base = make_settings()
    token = local_issuer.mint(base, sub="bob", scopes=["maml:read"], ttl=300)
    caplog.set_level(logging.INFO, logger="mcp_server.audit")
    async with Client(build_server(make_settings(token=token))) as client:
        allowed = await client.call_tool("verify_maml", {"document": example_workflow()})
        assert not allowed.is_error
        assert audit_lines(caplog) == []  # an allowed call is not a denial
        refused = await client.call_tool("sign_maml", {"document": example_workflow()})
        assert refused.is_error
    [line] = audit_lines(caplog)
    assert line["event"] == "denied"
    assert line["code"] == "forbidden" and line["operation"] == "sign_maml"
    assert line["principal"]["sub"] == "bob"
    assert "maml:sign" in line["reason"]
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text  # not even the signature part


async def test_an_unauthenticated_caller_is_audited_without_principal(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcp_server.audit")
    async with Client(build_server(make_settings(token="garbage-token-text"))) as client:
        result = await client.call_tool("verify_maml", {"document": example_workflow()})
    assert result.is_error
    [line] = audit_lines(caplog)
    assert line["code"] == "unauthenticated" and line["operation"] == "verify_maml"
    assert "principal" not in line
    assert "garbage-token-text" not in caplog.text


# -- 3. rate limit through the guard ---------------------------------------------------------------


async def test_rate_limit_through_the_guard(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcp_server.audit")
    async with Client(build_server(make_settings(rate_per_minute=60, rate_burst=3))) as client:
        for _ in range(3):
            assert not (await client.call_tool("validate_maml", {"document": "x"})).is_error
        refused = await client.call_tool("validate_maml", {"document": "x"})
    error = error_of(refused)
    assert error is not None and error["code"] == "rate_limited"
    retry_after = error["details"]["retry_after"]
    assert 0 < retry_after <= 1.0  # one call a second: at most a second to the next token
    [line] = audit_lines(caplog)
    assert line["code"] == "rate_limited" and line["principal"]["sub"] == "local"


async def test_rate_limit_is_per_principal_and_before_the_document(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    limiter = RateLimiter(open_engine(f"sqlite:///{tmp_path / 'rate.db'}"), per_minute=60, burst=1)
    policy = Guard(Policy(settings, parser.Limits()), open_keys(settings), limiter)
    alice, bob = principal("alice", "maml:read"), principal("bob", "maml:read")
    await policy.guard(alice, "verify_maml")
    with pytest.raises(RateLimited):  # rate before parsing: the garbage document is not looked at
        await policy.guard(alice, "maml://workflows", document="not maml")
    await policy.guard(bob, "verify_maml")  # bob has his own bucket
    limiter.engine.dispose()


async def test_rate_limit_off(make_settings: Callable[..., Settings]) -> None:
    server = build_server(make_settings(rate_per_minute=0, rate_burst=1))
    async with Client(server) as client:
        assert (await server.host.ready()).guard.limiter is None
        for _ in range(5):
            assert not (await client.call_tool("validate_maml", {"document": "x"})).is_error
