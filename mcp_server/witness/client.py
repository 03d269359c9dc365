"""A client for the add-checkpoint call of c2sp.org/tlog-witness.

    POST <submission prefix>/add-checkpoint

Request body (tlog-witness, "add-checkpoint"), every line ending in a newline:

    old <size of the previous checkpoint, ASCII decimal, no leading zeros>
    <base64 consistency proof hash>        zero to 63 lines ("The client MUST NOT send more than 63")
    <empty line>
    <the signed checkpoint note>

Answers:

- 200: one or more note signature lines ("— <name> <base64>\\n"), returned as they are, each with its
  newline, after a check of their form only. They are cosignatures to verify with the witness's key
  (`cosignature.verify_line`, or a `Policy`): "The client MUST ignore any cosignatures from unknown
  keys".
- 409: the body is the witness's latest cosigned tree size and a newline (Content-Type
  text/x.tlog.size): `WitnessConflict(size)`.
- 400, 403, 404, 422 and any other refusal: `WitnessRefused(status, message)`.
- no answer, a timeout, 429 or a 5xx: `WitnessUnavailable`.

Responses are read up to `MAX_RESPONSE_BYTES`. HTTP goes through httpx2, as the rest of the project;
pass `client=` to reuse one connection pool ("Clients SHOULD use ... HTTP keep-alive").
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

import httpx2

from mcp_server.errors import SignatureInvalid
from mcp_server.ledger import checkpoint as notes
from mcp_server.ledger.merkle import HASH_SIZE
from mcp_server.witness.errors import WitnessConflict, WitnessRefused, WitnessUnavailable

MAX_PROOF_LINES = 63  # tlog-witness: "The client MUST NOT send more than 63 consistency proof lines"
MAX_RESPONSE_BYTES = 256 * 1024
MAX_COSIGNATURES = notes.MAX_SIGNATURES
SIZE_CONTENT_TYPE = "text/x.tlog.size"

_U64_MAX = (1 << 64) - 1
_SIZE_BODY = re.compile(r"(0|[1-9][0-9]{0,19})\n")
_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def request_body(old_size: int, consistency: Sequence[bytes], note: str) -> bytes:
    """The add-checkpoint request body; ValueError for arguments the protocol can't carry."""
    if type(old_size) is not int or not 0 <= old_size <= _U64_MAX:
        raise ValueError(f"old size {old_size!r} is not an integer in 0..2^64-1")
    if len(consistency) > MAX_PROOF_LINES:
        raise ValueError(
            f"consistency proof has {len(consistency)} hashes; at most {MAX_PROOF_LINES} are sent"
        )
    if old_size == 0 and consistency:
        raise ValueError("the consistency proof from size 0 is empty")
    for position, node in enumerate(consistency):
        if not isinstance(node, bytes) or len(node) != HASH_SIZE:
            raise ValueError(f"consistency proof hash {position} is not {HASH_SIZE} bytes")
    if not isinstance(note, str) or not note.endswith("\n"):
        raise ValueError("the checkpoint note must be a string ending in a newline")
    lines = [f"old {old_size}", *(base64.b64encode(node).decode("ascii") for node in consistency)]
    return ("".join(line + "\n" for line in lines) + "\n" + note).encode("utf-8")


def add_checkpoint(
    url: str,
    old_size: int,
    consistency: list[bytes],
    note: str,
    *,
    timeout: float,
    client: httpx2.Client | None = None,
) -> list[str]:
    """POST the checkpoint to the witness at submission prefix `url`; its cosignature lines.

    Each line is returned with its final newline, so `note + "".join(lines)` is the note with the
    witness's cosignatures added. Raises WitnessConflict, WitnessRefused or WitnessUnavailable
    (module docs); ValueError for arguments that can't be sent.
    """
    body = request_body(old_size, consistency, note)
    endpoint = url.removesuffix("/") + "/add-checkpoint"
    try:
        if client is None:
            with httpx2.Client(timeout=timeout, follow_redirects=False) as own:
                status, content = _post(own, endpoint, body, timeout)
        else:
            status, content = _post(client, endpoint, body, timeout)
    except httpx2.TimeoutException:
        raise WitnessUnavailable(f"witness at {_host(url)} did not answer within {timeout:g} s") from None
    except httpx2.HTTPError as exc:
        raise WitnessUnavailable(f"witness at {_host(url)} is unreachable ({type(exc).__name__})") from None
    if status == 200:
        return _cosignature_lines(content)
    if status == 409:
        return _raise_conflict(content)
    if status == 429 or 500 <= status <= 599:
        raise WitnessUnavailable(f"witness at {_host(url)} answered HTTP {status}: {_message(content)}")
    raise WitnessRefused(status, _message(content))


def _post(client: httpx2.Client, endpoint: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    """Status and body (at most MAX_RESPONSE_BYTES + 1 bytes are read)."""
    with client.stream("POST", endpoint, content=body, timeout=timeout) as response:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                break
        return response.status_code, b"".join(chunks)


def _cosignature_lines(content: bytes) -> list[str]:
    """The signature lines of a 200 answer, each checked for the signed-note line form."""
    if len(content) > MAX_RESPONSE_BYTES:
        raise WitnessUnavailable(f"witness answered more than {MAX_RESPONSE_BYTES} bytes")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessUnavailable("witness answered 200 with a body that is not UTF-8") from None
    if not text.endswith("\n"):
        raise WitnessUnavailable("witness answered 200 without signature lines ending in a newline")
    lines = [line + "\n" for line in text[:-1].split("\n")]
    if len(lines) > MAX_COSIGNATURES:
        raise WitnessUnavailable(f"witness answered {len(lines)} signature lines; at most {MAX_COSIGNATURES}")
    # The form check of signed-note: a one-line dummy note carrying these lines must split cleanly.
    try:
        notes._split_note("x\n\n" + "".join(lines))
    except SignatureInvalid as exc:
        raise WitnessUnavailable(
            f"witness answered 200 with malformed signature lines: {exc.message}"
        ) from None
    return lines


def _raise_conflict(content: bytes) -> list[str]:
    match = _SIZE_BODY.fullmatch(content.decode("ascii", "replace"))
    if match is None or int(match.group(1)) > _U64_MAX:
        raise WitnessRefused(409, f"conflict without a tree size: {_message(content)}")
    raise WitnessConflict(int(match.group(1)))


def _message(content: bytes) -> str:
    """The first line of a witness's answer, printable ASCII only, at most 200 characters."""
    first = content[:400].decode("utf-8", "replace").partition("\n")[0]
    cleaned = _PRINTABLE.sub("?", first).strip()
    return (cleaned[:200] or "(no message)") if cleaned else "(no message)"


def _host(url: str) -> str:
    try:
        return httpx2.URL(url).host or "?"
    except Exception:  # an unparsable URL fails the request anyway; name nothing from it
        return "?"
