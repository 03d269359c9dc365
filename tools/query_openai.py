"""Tool `query_openai`: ask an OpenAI or Azure OpenAI model, within this server's budgets."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from mcp_server.adapters import ToolRegistry
from mcp_server.calls import Call
from mcp_server.errors import BudgetSpent
from mcp_server.llm import prompts


class TokenUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class QueryResult(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)

    text: str | None = Field(description="The model's answer; null when `json` carries it.")
    json_: Any = Field(
        default=None,
        alias="json",
        description="The answer parsed as JSON and valid against the output schema (when one was given).",
    )
    model: str = Field(description="The model that answered, as the provider names it.")
    usage: TokenUsage
    finish_reason: str | None = Field(description="stop, length (max_tokens reached), content_filter, ...")
    cached: bool = Field(description="True when answered from this server's cache, without a model call.")
    request_id: str | None = Field(description="The provider's request id (of the original call if cached).")


def register(tools: ToolRegistry) -> None:
    @tools.tool(
        title="Ask an OpenAI model", document="document", limits={"max_tokens": "max_tokens"}, task="deferred"
    )
    async def query_openai(
        call: Call,
        prompt: Annotated[
            str | None, Field(description="The question or instruction; omit when giving `document`.")
        ] = None,
        system: Annotated[
            str | None, Field(description="System message to go with `prompt` (not with `document`).")
        ] = None,
        document: Annotated[
            str | None,
            Field(
                description="A signed MAML document of type prompt or workflow: its ## Context is the system "
                "message, its ## Intent the question, its ## Output_Schema the output schema."
            ),
        ] = None,
        model: Annotated[
            str | None,
            Field(description="Model (Azure OpenAI: deployment); omit for the server's default."),
        ] = None,
        max_tokens: Annotated[
            int | None,
            Field(
                ge=1,
                description=f"Most tokens to generate; default {prompts.DEFAULT_MAX_TOKENS} (or the "
                "document's requires.max_tokens), capped by the server.",
            ),
        ] = None,
        temperature: Annotated[
            float | None, Field(ge=0, le=2, description="Sampling temperature, 0-2; omit for the model's.")
        ] = None,
        output_schema: Annotated[
            dict[str, Any] | None,
            Field(description="A JSON Schema the answer must satisfy (returned parsed in `json`)."),
        ] = None,
        cache: Annotated[
            bool, Field(description="Answer an identical recent request from the cache; false: always ask.")
        ] = True,
    ) -> QueryResult:
        """Ask an OpenAI or Azure OpenAI chat model and get its answer, with token usage.

        Give either `prompt` (and optionally `system`) or `document`, a MAML prompt or workflow document,
        which must carry a signature by a key this server trusts and admit you in permissions.execute.
        With an output schema (argument, or the document's ## Output_Schema) the answer is returned as
        validated `json`, or the call fails with invalid_document. Tokens count against your budget:
        rate_limited with retry_after when it is spent or the provider is busy. Identical requests
        within the cache lifetime are answered from the cache (`cached`: true) at no token cost.
        """
        services = call.services
        asked = prompts.question(
            prompt=prompt,
            system=system,
            document=call.document,
            output_schema=output_schema,
            max_tokens=max_tokens,
            server_max_tokens=services.settings.max_tokens,
        )
        try:
            answer = await services.llm.query(
                call.caller,
                asked.messages,
                model=model,
                max_tokens=asked.max_tokens,
                temperature=temperature,
                output_schema=asked.output_schema,
                use_cache=cache,
            )
        except BudgetSpent as exc:  # the caller's budget, not the provider, refused
            raise call.refuse(exc) from None
        completion = answer.completion
        call.note_backend_request(completion.request_id)
        return QueryResult(
            text=None if asked.output_schema is not None else completion.text,
            json=answer.value,
            model=completion.model,
            usage=TokenUsage(**completion.usage.__dict__),
            finish_reason=completion.finish_reason,
            cached=answer.cached,
            request_id=completion.request_id,
        )
