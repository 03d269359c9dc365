"""`completion/complete` through the in-memory client: workflow ids as the caller may read them,
and only the caller's own job and receipt ids, never another caller's."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp_types import Completion, PromptReference, ResourceTemplateReference
from pydantic import SecretStr

from mcp_server.auth.local_issuer import mint
from mcp_server.completions import MAX_VALUES
from mcp_server.server import build_server
from mcp_server.settings import Settings

pytestmark = pytest.mark.anyio

EXAMPLE_ID = "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
PRIVATE_ID = "urn:uuid:0b5c8a43-2f6e-4d1a-9c3b-7e8f9a0b1c2d"
PRIVATE = f"""---
maml_version: "2.0"
id: {PRIVATE_ID}
type: prompt
permissions:
  read: [agent://local]
---
## Intent
Only for local.
"""
BELL = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0], q[1];\nmeasure q -> c;\n'
)
WORKFLOWS = ResourceTemplateReference(uri="maml://workflows/{id}")
JOBS = ResourceTemplateReference(uri="jobs://{id}")
RECEIPTS = ResourceTemplateReference(uri="receipts://{id}")
RUN = PromptReference(name="run_workflow")


async def complete(
    client: Client, ref: ResourceTemplateReference | PromptReference, name: str, value: str = ""
) -> Completion:
    return (await client.complete(ref, {"name": name, "value": value})).completion


def as_bob(settings: Settings, scopes: list[str]) -> Settings:
    return settings.model_copy(update={"token": SecretStr(mint(settings, sub="bob", scopes=scopes, ttl=300))})


async def test_workflow_ids_follow_read_permissions(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    (settings.workflows_path / "private.maml.md").write_text(PRIVATE, encoding="utf-8")
    (settings.workflows_path / "broken.maml.md").write_text("---\nnot: maml\n---\n", encoding="utf-8")
    async with Client(build_server(settings)) as client:
        local_all = await complete(client, WORKFLOWS, "id")
        local_prompt = await complete(client, RUN, "workflow_id")
        by_prefix = await complete(client, WORKFLOWS, "id", "urn:uuid:6F1")  # case-insensitive
        by_name = await complete(client, RUN, "workflow_id", "pri")
        nothing = await complete(client, WORKFLOWS, "id", "zzz")
    async with Client(build_server(as_bob(settings, ["maml:read"]))) as client:
        bob_all = await complete(client, WORKFLOWS, "id")
        bob_private = await complete(client, RUN, "workflow_id", "pri")
    assert set(local_all.values) == {EXAMPLE_ID, "ghz", PRIVATE_ID, "private"}
    assert local_all.total == 4 and local_all.has_more is False
    assert local_prompt == local_all
    assert by_prefix.values == [EXAMPLE_ID] and by_prefix.total == 1
    assert by_name.values == ["private"]
    assert nothing.values == [] and nothing.total == 0 and nothing.has_more is False
    assert set(bob_all.values) == {EXAMPLE_ID, "ghz"} and bob_all.total == 2
    assert bob_private.values == [] and bob_private.total == 0


async def test_at_most_100_values_with_a_truthful_total(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    for i in range(60):
        document = PRIVATE.replace(PRIVATE_ID, f"urn:uuid:00000000-0000-4000-8000-{i:012d}")
        (settings.workflows_path / f"w{i:02d}.maml.md").write_text(document, encoding="utf-8")
    async with Client(build_server(settings)) as client:
        everything = await complete(client, WORKFLOWS, "id")
        stems = await complete(client, WORKFLOWS, "id", "w")
        ids = await complete(client, RUN, "workflow_id", "urn:uuid:0000")
    assert len(everything.values) == MAX_VALUES and everything.total == 122 and everything.has_more is True
    assert len(stems.values) == 60 and stems.total == 60 and stems.has_more is False
    assert len(ids.values) == 60 and ids.values[0] == "urn:uuid:00000000-0000-4000-8000-000000000000"


async def test_jobs_and_receipts_are_the_callers_own(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    bob_settings = as_bob(settings, ["maml:read", "quantum:run", "quantum:read", "receipts:read"])
    async with Client(build_server(settings)) as client:
        local_job = (
            await client.call_tool("run_quantum_circuit", {"circuit": BELL, "seed": 1})
        ).structured_content
        local_receipts = (await client.call_tool("list_receipts", {})).structured_content["receipts"]
    async with Client(build_server(bob_settings)) as client:
        bob_job = (
            await client.call_tool("run_quantum_circuit", {"circuit": BELL, "seed": 2})
        ).structured_content
        bob_receipts = (await client.call_tool("list_receipts", {})).structured_content["receipts"]
        bob_jobs = await complete(client, JOBS, "id")
        bob_ids = await complete(client, RECEIPTS, "id")
        bob_typed = await complete(client, JOBS, "id", local_job["job_id"][:8])
    # local holds receipts:audit, and may read bob's receipts and jobs by id; completion still
    # offers only its own
    async with Client(build_server(settings)) as client:
        local_jobs = await complete(client, JOBS, "id")
        local_ids = await complete(client, RECEIPTS, "id")
        local_typed = await complete(client, RECEIPTS, "id", bob_receipts[0]["id"][:8])
        readable = await client.read_resource(f"jobs://{bob_job['job_id']}")
    assert bob_jobs.values == [bob_job["job_id"]] and bob_jobs.total == 1 and bob_jobs.has_more is False
    assert local_jobs.values == [local_job["job_id"]] and local_jobs.total == 1
    assert bob_typed.values == [] and bob_typed.total == 0  # local's job, typed: not offered
    assert readable.contents  # what local could read, it is still not offered
    bob_all = {r["id"] for r in bob_receipts}
    local_all = {r["id"] for r in local_receipts}
    assert bob_all <= set(bob_ids.values) and not local_all & set(bob_ids.values)
    assert local_all <= set(local_ids.values) and not bob_all & set(local_ids.values)
    assert not bob_all & set(local_typed.values)
    assert bob_ids.total == len(bob_ids.values) and local_ids.total == len(local_ids.values)


async def test_without_the_scope_nothing_is_offered(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with Client(
        build_server(as_bob(settings, ["quantum:run", "quantum:read", "receipts:read"]))
    ) as client:
        await client.call_tool("run_quantum_circuit", {"circuit": BELL, "seed": 1})
        before = await complete(client, JOBS, "id")
    async with Client(build_server(as_bob(settings, ["quantum:run"]))) as client:
        jobs = await complete(client, JOBS, "id")
        receipts = await complete(client, RECEIPTS, "id")
        workflows = await complete(client, WORKFLOWS, "id")
    assert len(before.values) == 1
    assert jobs.values == [] and receipts.values == [] and workflows.values == []


async def test_unknown_references(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        with pytest.raises(MCPError) as info:
            await complete(client, PromptReference(name="no_such_prompt"), "x")
        other_template = await complete(client, ResourceTemplateReference(uri="file:///{path}"), "path")
        other_argument = await complete(client, WORKFLOWS, "name")
        free_text = await complete(client, PromptReference(name="write_workflow"), "intent", "a")
    assert info.value.code == -32602 and "no_such_prompt" in info.value.error.message
    for completion in (other_template, other_argument, free_text):
        assert completion.values == [] and completion.total == 0 and completion.has_more is False


async def test_every_resource_template_completes(make_settings: Callable[..., Settings]) -> None:
    """Each template's {id} completes from its family: a template added to resources/ (jobs://{id}/...)
    completes as its family's does."""
    async with Client(build_server(make_settings())) as client:
        job = (await client.call_tool("run_quantum_circuit", {"circuit": BELL, "seed": 1})).structured_content
        await client.call_tool("validate_maml", {"document": "x"})
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        offered = {t: await complete(client, ResourceTemplateReference(uri=t), "id") for t in templates}
    assert {"maml://workflows/{id}", "jobs://{id}", "receipts://{id}"} <= set(templates)
    for template, completion in offered.items():
        family = template.split("{", 1)[0]
        if family == "maml://workflows/":
            assert EXAMPLE_ID in completion.values, template
        elif family == "jobs://":
            assert completion.values == [job["job_id"]], template
        else:
            assert family == "receipts://", template
            assert len(completion.values) == 2, template  # run_quantum_circuit's and validate_maml's
