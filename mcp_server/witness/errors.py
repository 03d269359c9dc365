"""Errors of the witness package, each under an existing branch of `mcp_server.errors`.

    Forbidden
    ├── WitnessRefused      a witness answered 400/403/404/422 (or another refusal) to add-checkpoint
    └── WitnessConflict     a witness answered 409: it has recorded another tree size (`size`)
    BackendUnavailable
    └── WitnessUnavailable  no answer, a timeout, a 5xx or 429: try again later
    InvalidDocument
    └── PolicyError         a c2sp.org/tlog-policy file or a witness configuration is malformed

The codes stay those of the parents (stable codes, `mcp_server.errors`); the classes carry the
protocol's facts (`status`, `size`, `line`).
"""

from __future__ import annotations

from mcp_server.errors import BackendUnavailable, Forbidden, InvalidDocument


class WitnessRefused(Forbidden):
    """The witness refused the checkpoint (c2sp.org/tlog-witness, "add-checkpoint": 400 malformed or
    old size above the checkpoint size, 403 log signature, 404 unknown origin, 422 bad proof or a
    fork). `status` is the HTTP status, `reason` the witness's own words (sanitised, shortened)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"witness refused the checkpoint with HTTP {status}: {message}", status=status)
        self.status = status
        self.reason = message


class WitnessConflict(Forbidden):
    """409 Conflict: the old size sent is not the size of the witness's latest cosigned checkpoint
    for the origin. `size` is that size, from the text/x.tlog.size body (tlog-witness, add-checkpoint);
    the client retries with a consistency proof from it."""

    def __init__(self, size: int) -> None:
        super().__init__(f"witness has recorded tree size {size}; resend with a proof from it", size=size)
        self.size = size


class WitnessUnavailable(BackendUnavailable):
    """The witness could not be reached, timed out, or answered with a server error."""


class PolicyError(InvalidDocument):
    """A policy or witness configuration file is malformed; `line` (1-based) says where."""
