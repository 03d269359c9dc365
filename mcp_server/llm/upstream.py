"""One chat completion upstream, with bounded retries; the one seam where SDK errors are mapped.

429 and 5xx answers (and failed connections) are retried up to `llm_max_retries` times. The wait
before a retry is the answer's `Retry-After` (or `retry-after-ms`) when it gives one, else a short
exponential backoff; a wait longer than `llm_retry_max_wait_seconds`, or one that would take all
waits past `llm_retry_total_seconds`, is not waited: the call ends at once with the hint. A timeout
is not retried (the upstream may be working on it).

Errors leave as `MacroslowError`s (`raise ... from exc`) whose messages carry the HTTP status and the
retry hint, never the upstream's text, the request or any credential.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from typing import Any

import anyio
import httpx2
import openai

from mcp_server.errors import (
    BackendUnavailable,
    InvalidDocument,
    MacroslowError,
    NotFound,
    RateLimited,
)
from mcp_server.llm.chat import ChatRequest, Completion, Usage

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
FIRST_BACKOFF_SECONDS = 0.5
DEFAULT_HINT_SECONDS = 1.0
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class UpstreamTimeout(BackendUnavailable):
    """The upstream did not answer in time; it may still have done (and charged for) the work."""


class RetryPolicy:
    def __init__(self, retries: int, max_wait: float, total_wait: float) -> None:
        self.retries = retries
        self.max_wait = max_wait
        self.total_wait = total_wait


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the upstream asks to wait: `retry-after-ms`, `retry-after` (seconds or HTTP date)."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - (time.time() if now is None else now)
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


async def complete(client: openai.AsyncOpenAI, request: ChatRequest, policy: RetryPolicy) -> Completion:
    waited = 0.0
    attempt = 0
    while True:
        attempt += 1
        try:
            return await _once(client, request)
        except openai.APITimeoutError as exc:
            raise UpstreamTimeout(
                "the model provider did not answer in time; try again, perhaps with a smaller max_tokens",
                retry_after=DEFAULT_HINT_SECONDS,
            ) from exc
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            status, hint = None, None
            if isinstance(exc, openai.APIStatusError):
                if exc.status_code not in RETRY_STATUSES:
                    raise _refusal(exc, request) from exc
                status, hint = exc.status_code, retry_after(exc.response.headers)
            delay = hint if hint is not None else FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1)
            fits = delay <= policy.max_wait and waited + delay <= policy.total_wait
            if attempt <= policy.retries and fits:
                await anyio.sleep(delay)
                waited += delay
                continue
            raise _exhausted(
                status, attempt, hint if hint is not None else max(delay, DEFAULT_HINT_SECONDS)
            ) from exc
        except openai.OpenAIError as exc:  # anything else the SDK raises (e.g. a malformed answer)
            raise BackendUnavailable(
                f"the model provider's answer could not be used ({type(exc).__name__})"
            ) from exc


async def _once(client: openai.AsyncOpenAI, request: ChatRequest) -> Completion:
    # The body is posted as built (`ChatRequest.body`: plain JSON values) through the client's `post`,
    # where `chat.completions.create` ends too: the same URL (Azure: the deployment path and
    # api-version), headers, credentials, timeout and error statuses (raised as `APIStatusError`).
    # The answer is read from its JSON here rather than as a `ChatCompletion` model: `create`'s
    # parameter transformation and the model's construction cost ~1 ms a call and add nothing.
    response = await client.post("/chat/completions", body=request.body(), cast_to=httpx2.Response)
    try:
        return _completion(response.json(), response.headers.get("x-request-id"), request.model)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BackendUnavailable("the model provider's answer is not a chat completion") from exc


def _completion(data: Any, request_id: str | None, model: str) -> Completion:
    """A Chat Completions answer (OpenAI's JSON shape) as a `Completion`; errors on a wrong shape."""
    choice = data["choices"][0]
    text = choice["message"].get("content") or ""
    finish = choice.get("finish_reason")
    usage = data.get("usage")
    counts = Usage()
    if usage is not None:
        counts = Usage(
            int(usage["prompt_tokens"]), int(usage["completion_tokens"]), int(usage["total_tokens"])
        )
    answered = data.get("model") or model
    if not isinstance(text, str) or not isinstance(answered, str) or not isinstance(finish, str | None):
        raise TypeError("unexpected types in the answer")
    return Completion(
        text=text,
        model=answered,
        usage=counts,
        finish_reason=finish,
        request_id=request_id or (data.get("id") if isinstance(data.get("id"), str) else None),
        usage_reported=usage is not None,
    )


def _exhausted(status: int | None, attempts: int, hint: float) -> MacroslowError:
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if status == 429:
        return RateLimited(
            f"the model provider is rate limiting this server ({tries}); retry after the hint",
            retry_after=hint,
        )
    what = f"HTTP {status}" if status is not None else "no connection"
    return BackendUnavailable(
        f"the model provider failed ({what}, {tries}); try again later",
        retry_after=round(hint, 3),
        status=status,
    )


def _refusal(exc: openai.APIStatusError, request: ChatRequest) -> MacroslowError:
    status = exc.status_code
    code = exc.code if isinstance(exc.code, str) and _ERROR_CODE.fullmatch(exc.code) else None
    suffix = f", {code}" if code else ""
    if status in (400, 413, 422):
        return InvalidDocument(f"the model provider refused the request as invalid (HTTP {status}{suffix})")
    if status == 404:
        return NotFound(f"the model provider has no model or deployment {request.model[:64]!r} (HTTP 404)")
    if status in (401, 403):
        return BackendUnavailable(
            f"the model provider refused this server's credentials (HTTP {status}); tell its operator",
            status=status,
        )
    return BackendUnavailable(
        f"the model provider refused the request (HTTP {status}{suffix})", status=status
    )
