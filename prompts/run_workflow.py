"""Prompt `run_workflow`: validate, verify (or sign) and run one workflow, step by step."""

from __future__ import annotations

from mcp_types import EmbeddedResource, PromptMessage, TextContent, TextResourceContents

from mcp_server.auth.principal import Principal
from mcp_server.errors import MacroslowError
from mcp_server.llm.prompts import EXECUTABLE_TYPES
from mcp_server.maml import parser
from mcp_server.maml.model import MamlDocument
from mcp_server.policy.guard import Policy
from mcp_server.policy.operations import OPERATIONS, DocumentAction
from mcp_server.quantum.circuits import CIRCUIT_LANGUAGES
from mcp_server.services import Services
from mcp_server.signing import inspect_signature
from prompts._registry import Argument, Ask, BadArgument, PromptRegistry

WORKFLOWS = "maml://workflows"


def _unknown(workflow_id: str) -> BadArgument:
    # The same answer for a workflow that does not exist, does not parse, or is not the caller's to
    # read: an id reveals nothing (as for the resource maml://workflows/{id}).
    return BadArgument(
        "workflow_id",
        f"no workflow {workflow_id[:120]!r} that you may read; complete the argument or read "
        "maml://workflows for the ids there are",
    )


def _find(services: Services, principal: Principal, workflow_id: str) -> tuple[MamlDocument, str, str]:
    """The workflow the caller may read (document, text, signature status); blocking."""
    try:
        text = services.workflows.get(workflow_id).text
        document = parser.parse(text, services.limits)
    except MacroslowError:
        raise _unknown(workflow_id) from None
    if not services.guard.policy.may(principal, DocumentAction.read, document):
        raise _unknown(workflow_id)
    report = inspect_signature(text, services.keys, limits=services.limits)
    if not report.signed:
        status = "unsigned"
    elif report.valid:
        status = "signed by a trusted key" if report.trusted else "signed by a key this server does not trust"
    else:
        status = "signed, but the signature does not verify"
    return document, text, status


def _offered(policy: Policy, principal: Principal, tool: str) -> str:
    """'' when the caller may call `tool`, else a note saying why not."""
    if policy.visible(principal, tool):
        return ""
    op = OPERATIONS[tool]
    if tool not in policy.offered:
        return f" (this server does not offer {tool} now)"
    return f" (your token lacks the scope {op.scope} that {tool} needs: ask for it first)"


def _run_step(document: MamlDocument, policy: Policy, principal: Principal, text_name: str) -> str:
    circuits = [
        b
        for b in document.code_blocks
        if b.section == "Code_Blocks" and b.language.lower() in CIRCUIT_LANGUAGES
    ]
    requires = document.front_matter.requires
    if len(circuits) == 1:
        shots = f"up to requires.shots = {requires.shots}" if requires.shots else "optional"
        return (
            f"Run it: call run_quantum_circuit{_offered(policy, principal, 'run_quantum_circuit')} with "
            f'`circuit` = {text_name}, `shots` ({shots}), `backend` "local" (the simulator, the '
            'default) or "azure:<target>", and `seed` for a repeatable run. If the result\'s `status` '
            "is not final yet, read the resource jobs://<job_id> until it is (cancel_job with `job_id` "
            "stops it). Report the measurement counts."
        )
    if document.front_matter.type in EXECUTABLE_TYPES:
        return (
            f"Run it: call query_openai{_offered(policy, principal, 'query_openai')} with `document` = "
            f"{text_name} (optionally `max_tokens`, within requires.max_tokens when set). Report the "
            "answer (`text`, or `json` when the document has an output schema) and the token usage."
        )
    kind = document.front_matter.type.value
    return (
        f"Nothing on this server runs a document of type {kind} without exactly one circuit block in "
        "## Code_Blocks: report the validation and the signature check instead."
    )


def register(prompts: PromptRegistry) -> None:
    @prompts.prompt(
        title="Sign and run a workflow",
        arguments=[
            Argument(
                "workflow_id",
                "The workflow: its document id (urn:uuid:...) or file name, as maml://workflows lists it.",
                required=True,
                completion="workflows",
            )
        ],
        needs=(WORKFLOWS, "validate_maml", "verify_maml"),
    )
    async def run_workflow(ask: Ask, workflow_id: str) -> list[PromptMessage]:
        """Walk through running one of the workflows you may read: validate_maml, verify_maml (and
        sign_maml if it is not signed by a trusted key), then run_quantum_circuit or query_openai."""
        services = await ask.services()
        principal = ask.principal
        await services.guard.admit(principal, WORKFLOWS)  # counted like a read of the workflow
        document, text, status = await services.cpu(_find, services, principal, workflow_id)
        policy = services.guard.policy
        uri = f"maml://workflows/{document.id}"
        title = f"'{document.title}' " if document.title else ""
        signed_ok = status == "signed by a trusted key"
        sign = (
            "It is already signed by a trusted key: if verify_maml agrees (`valid` and `trusted` both "
            "true), use the attached text as it is."
            if signed_ok
            else f"It is {status} now: call sign_maml{_offered(policy, principal, 'sign_maml')} with "
            "`document` = the attached text (the document's permissions.write must admit you), then "
            "verify_maml on its `signed_document`, and use that signed text from here on."
        )
        steps = f"""\
Run the MAML workflow {title}({document.id}, type {document.front_matter.type.value}), attached as
{uri}, step by step. Tell me what each step found, and ask me before a step that signs or runs.

1. Validate: call validate_maml with `document` = the attached text. If `valid` is false, stop and
   report the errors (field and line).
2. Check the signature: call verify_maml with `document` = the attached text. {sign}
3. {_run_step(document, policy, principal, "the signed text")}

Running needs the document's permissions.execute to admit you; an error result starts with its
stable code (forbidden, signature_invalid, request_too_large, rate_limited, ...): report it as is."""
        return [
            PromptMessage(role="user", content=TextContent(type="text", text=steps)),
            PromptMessage(
                role="user",
                content=EmbeddedResource(
                    type="resource",
                    resource=TextResourceContents(uri=uri, mime_type="text/markdown", text=text),
                ),
            ),
        ]
