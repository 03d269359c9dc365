"""`admits`: each permission entry form, entries that must not match, and the parsed documents' variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_server.auth.principal import Principal
from mcp_server.errors import InvalidDocument
from mcp_server.home import example_workflow
from mcp_server.maml import parser
from mcp_server.maml.model import MamlDocument
from mcp_server.policy.guard import Policy
from mcp_server.policy.operations import DocumentAction
from mcp_server.policy.permissions import admits
from mcp_server.settings import Settings

GATEWAY = "macroslow-mcp"
EXAMPLE_PERMISSIONS = (
    "permissions:\n"
    "  read: [agent://*, scope:maml:read]\n"
    "  write: [agent://local]\n"
    "  execute: [agent://local, scope:quantum:run]\n"
)


def who(sub: str, scopes: tuple[str, ...] = (), roles: tuple[str, ...] = ()) -> Principal:
    return Principal(sub=sub, issuer="test", scopes=frozenset(scopes), roles=frozenset(roles))


ALICE = who("alice", scopes=("maml:read",), roles=("Reader",))


@pytest.mark.parametrize(
    ("entry", "principal", "gateway", "expected"),
    [
        # any authenticated caller
        ("*", ALICE, GATEWAY, True),
        ("*", who("x"), GATEWAY, True),
        # agent://<sub>: exact
        ("agent://alice", ALICE, GATEWAY, True),
        ("agent://alic", ALICE, GATEWAY, False),
        ("agent://alice", who("alice2"), GATEWAY, False),
        ("agent://Alice", ALICE, GATEWAY, False),
        # agent://<prefix>*
        ("agent://team-*", who("team-blue"), GATEWAY, True),
        ("agent://team-*", who("team-"), GATEWAY, True),
        ("agent://team-*", who("team"), GATEWAY, False),
        ("agent://team-*", ALICE, GATEWAY, False),
        ("agent://*", ALICE, GATEWAY, True),
        # scope:<scope> and scope:<prefix>*
        ("scope:maml:read", ALICE, GATEWAY, True),
        ("scope:maml:sign", ALICE, GATEWAY, False),
        ("scope:maml:read", who("alice"), GATEWAY, False),
        ("scope:maml:*", ALICE, GATEWAY, True),
        ("scope:maml:*", who("bob", scopes=("quantum:run",)), GATEWAY, False),
        ("scope:quantum:*", ALICE, GATEWAY, False),
        ("scope:maml:rea", ALICE, GATEWAY, False),
        # role:<role>
        ("role:Reader", ALICE, GATEWAY, True),
        ("role:Writer", ALICE, GATEWAY, False),
        ("role:reader", ALICE, GATEWAY, False),
        ("role:Read*", ALICE, GATEWAY, True),
        # a scope entry does not match a role of the same name, nor the reverse
        ("role:maml:read", ALICE, GATEWAY, False),
        ("scope:Reader", ALICE, GATEWAY, False),
        # gateway://<name>: this server's name
        ("gateway://macroslow-mcp", who("anyone"), GATEWAY, True),
        ("gateway://macroslow-mcp", who("anyone"), "other-gateway", False),
        ("gateway://other-gateway", who("anyone"), GATEWAY, False),
        ("gateway://macroslow-*", who("anyone"), GATEWAY, True),
        # an agent entry is not a gateway entry
        ("agent://macroslow-mcp", who("anyone"), GATEWAY, False),
    ],
)
def test_single_entry(entry: str, principal: Principal, gateway: str, expected: bool) -> None:
    assert admits([entry], principal, gateway) is expected


def test_empty_list_admits_nobody() -> None:
    everyone = who("alice", scopes=("maml:read", "maml:sign"), roles=("Admin",))
    assert admits([], everyone, GATEWAY) is False
    assert admits((), everyone, GATEWAY) is False


def test_any_entry_in_the_list_is_enough() -> None:
    entries = ["agent://bob", "scope:quantum:run", "role:Reader"]
    assert admits(entries, ALICE, GATEWAY) is True  # by role
    assert admits(entries[:2], ALICE, GATEWAY) is False
    assert admits(iter(entries), ALICE, GATEWAY) is True  # any iterable


# -- through parsed documents ----------------------------------------------------------------------


def with_permissions(block: str) -> MamlDocument:
    text = example_workflow()
    assert EXAMPLE_PERMISSIONS in text
    return parser.parse(text.replace(EXAMPLE_PERMISSIONS, block))


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    return Policy(settings, parser.Limits())


def test_example_permissions(policy: Policy) -> None:
    doc = parser.parse(example_workflow())
    local, bob = who("local"), who("bob", scopes=("quantum:run",))
    assert policy.may(bob, DocumentAction.read, doc)  # agent://*
    assert not policy.may(bob, DocumentAction.write, doc)
    assert policy.may(bob, DocumentAction.execute, doc)  # scope:quantum:run
    assert policy.may(local, DocumentAction.write, doc)
    assert not policy.may(who("carol"), DocumentAction.execute, doc)


def test_write_implies_read(policy: Policy) -> None:
    doc = with_permissions(
        "permissions:\n  read: [agent://alice]\n  write: [agent://writer]\n  execute: [agent://alice]\n"
    )
    writer = who("writer")
    assert policy.may(writer, DocumentAction.write, doc)
    assert policy.may(writer, DocumentAction.read, doc)
    assert not policy.may(writer, DocumentAction.execute, doc)  # write does not imply execute
    alice = who("alice")
    assert policy.may(alice, DocumentAction.read, doc)
    assert not policy.may(alice, DocumentAction.write, doc)  # read does not imply write
    assert not policy.may(who("mallory"), DocumentAction.read, doc)


def test_boolean_and_string_variants(policy: Policy) -> None:
    doc = with_permissions('permissions:\n  read: true\n  write: false\n  execute: "agent://alice"\n')
    assert doc.front_matter.permissions.read == ["*"]
    assert doc.front_matter.permissions.write == []
    assert doc.front_matter.permissions.execute == ["agent://alice"]
    anyone, alice = who("anyone"), who("alice")
    assert policy.may(anyone, DocumentAction.read, doc)
    assert not policy.may(alice, DocumentAction.write, doc)  # false: nobody
    assert not policy.may(anyone, DocumentAction.write, doc)
    assert policy.may(alice, DocumentAction.execute, doc)
    assert not policy.may(who("alice2"), DocumentAction.execute, doc)


def test_missing_permissions_admit_nobody(policy: Policy) -> None:
    doc = with_permissions("")
    for action in DocumentAction:
        assert not policy.may(who("local", scopes=("maml:read",)), action, doc)


def test_gateway_entry_uses_the_server_name(tmp_path: Path) -> None:
    doc = with_permissions("permissions:\n  read: [gateway://macroslow-mcp]\n")
    anyone = who("anyone")
    default = Settings(home=tmp_path / "a", _env_file=None)  # type: ignore[call-arg]
    renamed = Settings(home=tmp_path / "b", server_name="other", _env_file=None)  # type: ignore[call-arg]
    assert Policy(default, parser.Limits()).may(anyone, DocumentAction.read, doc)
    assert not Policy(renamed, parser.Limits()).may(anyone, DocumentAction.read, doc)


@pytest.mark.parametrize("entry", ["agent://", "alice", "scope:", "agent://a b", "role:*x", "user://alice"])
def test_malformed_entries_are_refused_when_parsing(entry: str) -> None:
    with pytest.raises(InvalidDocument) as info:
        with_permissions(f'permissions:\n  read: ["{entry}"]\n')
    assert "permissions" in str(info.value)
