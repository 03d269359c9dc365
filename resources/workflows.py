"""Resources `maml://workflows` (the list) and `maml://workflows/{id}` (one document's text)."""

from __future__ import annotations

import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from pydantic import BaseModel

from mcp_server.errors import MacroslowError, NotFound
from mcp_server.maml import parser
from mcp_server.signing import inspect_signature
from mcp_server.state import AppState


class WorkflowEntry(BaseModel):
    id: str | None
    uri: str | None
    file: str
    type: str | None
    title: str | None
    signature: str  # trusted | untrusted | invalid | unsigned
    problems: list[str]


def _entry(name: str, text: str, state: AppState) -> WorkflowEntry:
    try:
        doc = parser.parse(text, state.limits)
    except MacroslowError as exc:
        return WorkflowEntry(
            id=None, uri=None, file=name, type=None, title=None, signature="invalid", problems=[str(exc)]
        )
    report = inspect_signature(text, state.keys, limits=state.limits)
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


def register(server: MCPServer[Any], state: AppState) -> None:
    @server.resource(
        "maml://workflows",
        name="workflows",
        title="MAML workflows",
        description="The workflows this server offers: id, type, title and signature status (JSON).",
        mime_type="application/json",
    )
    def list_workflows() -> str:
        entries = [_entry(wf.name, wf.text, state) for wf in state.workflows.files()]
        return json.dumps({"workflows": [e.model_dump() for e in entries]}, indent=2, ensure_ascii=False)

    @server.resource(
        "maml://workflows/{id}",
        name="workflow",
        title="A MAML workflow",
        description="One workflow document (.maml.md text), by document id (urn:uuid:...) or file name.",
        mime_type="text/markdown",
    )
    def read_workflow(id: str) -> str:
        try:
            return state.workflows.get(id).text
        except NotFound as exc:
            raise ResourceNotFoundError(exc.message) from None
