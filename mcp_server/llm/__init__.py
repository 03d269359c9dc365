"""`query_openai`: chat completions from OpenAI or Azure OpenAI behind budgets, a cache and retries.

    chat.py      what is asked (`ChatRequest`) and what comes back (`Completion`), the cache key
    prompts.py   the messages, from a prompt or a signed MAML prompt/workflow document
    output.py    JSON output schemas: checked before sending, answers validated against them
    client.py    the SDK client (`AsyncOpenAI` / `AsyncAzureOpenAI`) built from settings
    upstream.py  one call upstream: bounded retries, and the one seam mapping SDK errors
    cache.py     the response cache table (answers only; never credentials)
    service.py   `LlmService`: size check, cache, budget reservation, call, settlement

Only client.py and upstream.py import `openai`, and only when the first query is made.
"""
