"""Resources `maml://workflows` (the list) and `maml://workflows/{id}` (one document's text)."""

from __future__ import annotations

import json
import logging

from pydantic import BaseModel

from mcp_server.adapters import ResourceRegistry
from mcp_server.auth.principal import Principal
from mcp_server.calls import Call
from mcp_server.errors import MacroslowError
from mcp_server.maml import parser
from mcp_server.policy.operations import DocumentAction
from mcp_server.services import Services
from mcp_server.signing import inspect_signature

log = logging.getLogger(__name__)
OPERATION = "maml://workflows"


class WorkflowEntry(BaseModel):
    id: str | None
    uri: str | None
    file: str
    type: str | None
    title: str | None
    signature: str  # trusted | untrusted | invalid | unsigned
    problems: list[str]


def _entry(name: str, text: str, services: Services, principal: Principal) -> WorkflowEntry | None:
    """The listing entry, or None when the document's permissions.read do not admit the caller.

    A document that does not parse has no permissions anyone can be admitted by: it is left out
    (and logged for the operator, who can run `macroslow-mcp validate` on it).
    """
    try:
        doc = parser.parse(text, services.limits)
    except MacroslowError as exc:
        log.warning("workflow %s is not listed: %s", name, exc)
        return None
    if not services.guard.policy.may(principal, DocumentAction.read, doc):
        return None
    report = inspect_signature(text, services.keys, limits=services.limits)
    if not report.signed:
        status = "unsigned"
    elif report.valid:
        status = "trusted" if report.trusted else "untrusted"
    else:
        status = "invalid"
    return WorkflowEntry(
        id=doc.id,
        uri=f"maml://workflows/{doc.id}",
        file=name,
        type=doc.front_matter.type.value,
        title=doc.title,
        signature=status,
        problems=[] if status in ("trusted", "unsigned") else report.reasons,
    )


def register(resources: ResourceRegistry) -> None:
    @resources.resource(
        "maml://workflows",
        operation=OPERATION,
        name="workflows",
        title="MAML workflows",
        description="The workflows you may read: id, type, title and signature status (JSON).",
        mime_type="application/json",
    )
    async def list_workflows(call: Call) -> str:
        services = call.services

        def listing() -> str:
            found = (_entry(wf.name, wf.text, services, call.caller) for wf in services.workflows.files())
            entries = [e.model_dump() for e in found if e is not None]
            return json.dumps({"workflows": entries}, indent=2, ensure_ascii=False)

        return await call.cpu(listing)

    @resources.resource(
        "maml://workflows/{id}",
        operation=OPERATION,
        name="workflow",
        title="A MAML workflow",
        description="One workflow document (.maml.md text), by document id (urn:uuid:...) or file name.",
        mime_type="text/markdown",
    )
    async def read_workflow(call: Call, id: str) -> str:
        """Needs maml:read, and the document's permissions.read must admit the caller."""
        # After scope and rate: an unknown id reveals nothing. Finding it reads the directory.
        text = (await call.cpu(call.services.workflows.get, id)).text
        await call.decide(document=text)
        return text
