"""The one error root of macroslow-mcp.

Every failure the server anticipates is a `MacroslowError` carrying a stable `code` that agents,
the CLI and (later) receipts can rely on. Third-party exceptions are mapped to these at one seam per
backend (`raise ... from exc`); nothing else leaks out of `mcp_server`.

    MacroslowError                      code
    ├── InvalidDocument                 invalid_document     malformed or unsafe MAML, bad arguments
    ├── RequestTooLarge                 request_too_large    over a configured size or count limit
    ├── SignatureInvalid                signature_invalid    missing, malformed, forged or untrusted signature
    ├── KeyStoreError                   key_error            key unreadable, locked or of the wrong kind
    ├── NotFound                        not_found            no such workflow, key or job
    ├── Unauthenticated                 unauthenticated      no or bad credentials
    ├── Forbidden                       forbidden            credentials fine, permission missing
    ├── RateLimited                     rate_limited         quota or budget spent; carries `retry_after`
    │   └── BudgetSpent                 rate_limited         the caller's own rate or LLM budget: a refusal
    ├── BackendUnavailable              backend_unavailable  a backend (database, simulator, upstream) failed
    └── InternalError                   internal_error       a failure the server did not anticipate (a bug);
                                                             the details stay in the server's log

How callers see them: a tool error result (`mcp_server.adapters.results`) carries the code, message
and details in its text and under `_meta["macroslow-mcp/error"]`; a resource read answers with a
JSON-RPC error whose `data` is the same dict; the CLI prints `<code>: <message>` on stderr.

Messages are written for the caller to act on. They never carry keys, tokens, stack traces or raw
upstream text.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MacroslowError(Exception):
    """Root of every anticipated failure; `code` is stable, `message` is for people and models."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            data["details"] = self.details
        return data

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidDocument(MacroslowError):
    """A MAML document (or an argument) is malformed or unsafe.

    `field` and `line` (1-based, in the whole document) point at the problem when known.
    """

    code = "invalid_document"

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None) -> None:
        where = []
        if field:
            where.append(f"field '{field}'")
        if line:
            where.append(f"line {line}")
        text = f"{', '.join(where)}: {message}" if where else message
        details: dict[str, Any] = {}
        if field:
            details["field"] = field
        if line:
            details["line"] = line
        super().__init__(text, **details)
        self.field = field
        self.line = line


class RequestTooLarge(MacroslowError):
    """Over a limit; `requested` and `allowed` carry the numbers."""

    code = "request_too_large"

    def __init__(self, message: str, *, requested: int, allowed: int) -> None:
        super().__init__(f"{message} ({requested} > {allowed})", requested=requested, allowed=allowed)


class SignatureInvalid(MacroslowError):
    code = "signature_invalid"


class KeyStoreError(MacroslowError):
    code = "key_error"


class NotFound(MacroslowError):
    code = "not_found"


class Unauthenticated(MacroslowError):
    code = "unauthenticated"


class Forbidden(MacroslowError):
    code = "forbidden"


class RateLimited(MacroslowError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, **details: Any) -> None:
        super().__init__(message, retry_after=round(retry_after, 3), **details)
        self.retry_after = retry_after


class BudgetSpent(RateLimited):
    """A caller's call rate or LLM token budget is spent: the policy refuses the call (as opposed
    to an upstream saying it is busy, which is also `rate_limited`)."""


class BackendUnavailable(MacroslowError):
    code = "backend_unavailable"


class InternalError(MacroslowError):
    code = "internal_error"


def rebuild(data: dict[str, Any], *, prefix: str = "") -> MacroslowError:
    """An error stored as `to_dict()` (a job's failure, say) as the same class again, with the same
    code and details; unknown codes come back as `BackendUnavailable`."""
    code = str(data.get("code", ""))
    classes = [MacroslowError]
    while classes:
        cls = classes.pop()
        if cls.code == code:
            break
        classes.extend(cls.__subclasses__())
    else:
        cls = BackendUnavailable
    exc = cls.__new__(cls)
    MacroslowError.__init__(exc, prefix + str(data.get("message", "")), **dict(data.get("details") or {}))
    if cls is RateLimited:
        exc.retry_after = float(exc.details.get("retry_after", 0))  # type: ignore[attr-defined]
    return exc


class Cancelled(MacroslowError):
    """The caller cancelled the work before it ended (`tasks/cancel`)."""

    code = "cancelled"
