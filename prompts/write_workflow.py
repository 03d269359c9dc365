"""Prompt `write_workflow`: write a MAML workflow from an intent, to the format's rules."""

from __future__ import annotations

from mcp_types import PromptMessage, TextContent

from prompts import _maml
from prompts._registry import Argument, Ask, PromptRegistry


def register(prompts: PromptRegistry) -> None:
    @prompts.prompt(
        title="Write a MAML workflow",
        arguments=[
            Argument(
                "intent",
                "What the workflow should do, in your own words (e.g. 'a Bell pair measured 2000 times' "
                "or 'summarise a release note as three bullet points').",
                required=True,
            )
        ],
        needs=("validate_maml",),
    )
    async def write_workflow(ask: Ask, intent: str) -> list[PromptMessage]:
        """Write a MAML document (.maml.md) for what you describe: the model is given the format's
        rules, this server's limits and an example, and checks its document with validate_maml."""
        example = _maml.example()
        task = f"""\
Write one MAML document for this intent:

<intent>
{intent}
</intent>

Follow the rules above; the example is a complete, valid quantum workflow. Choose the
`type` that fits: `quantum_workflow` with one circuit block in `## Code_Blocks` for a quantum
circuit, `prompt` (or `workflow`) with `## Intent`, `## Context` and, if the answer has a shape,
`## Output_Schema` for a question to a language model. State the intent in `## Intent`.

Then call the tool validate_maml with the argument `document` set to the whole document text. If
`valid` is false, fix each error it reports (it names the field and line) and call validate_maml
again, until `valid` is true. Show the final document in a ```markdown block. To run it later it
must be signed: sign_maml (argument `document`) returns `signed_document`."""
        return [
            PromptMessage(role="user", content=TextContent(type="text", text=_maml.rules(ask.settings))),
            PromptMessage(
                role="user",
                content=TextContent(
                    type="text", text=f"An example (valid, unsigned):\n\n~~~~markdown\n{example}~~~~"
                ),
            ),
            PromptMessage(role="user", content=TextContent(type="text", text=task)),
        ]
