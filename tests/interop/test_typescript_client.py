"""The server as hosts built on the official TypeScript MCP SDK see it (Claude Desktop-like hosts, the
MCP Inspector): its `Client`, over stdio and Streamable HTTP, at the pinned versions in ts/package.json.

The 1.x TS clients (since 1.17) validate `structuredContent` against the tool's `outputSchema` (armed
by `listTools()`) even on error results, and throw instead of returning a result that does not match;
the 2.x client skips that check for `isError` results. So error results carry no `structuredContent`:
`isError: true`, text `<code>: <message>`, and the stable code in `_meta["macroslow-mcp/error"]`.
Successful results keep `structuredContent`.

One server per (transport, SDK): all of a caller's calls go through one client run, and the answers
are checked by the tests below.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest

from mcp_server.home import example_workflow, initialize, open_keys
from mcp_server.settings import Settings
from mcp_server.signing import sign_document
from tests.server.test_transports import SERVE, _env, mint, start_server

pytestmark = [pytest.mark.subprocess, pytest.mark.interop]

ERROR_META = "macroslow-mcp/error"
ERROR_CODES = {
    "invalid_document",
    "request_too_large",
    "signature_invalid",
    "key_error",
    "not_found",
    "unauthenticated",
    "forbidden",
    "rate_limited",
    "backend_unavailable",
    "internal_error",
}
TRANSPORTS = ("stdio", "streamable-http")
# The package aliases in ts/package.json: 1.17.5, the first TS SDK whose client checks structuredContent
# against outputSchema; the newest 1.x; and the 2.x client package.
SDKS = ("sdk-old", "sdk-new", "sdk-v2")
RunClient = Callable[[Sequence[dict[str, Any]]], list[dict[str, Any]]]
MAX_DOCUMENT_BYTES = 16_384  # above the signed example (~6 KB), so only the oversized call hits it
FULL_SCOPES = "maml:read maml:sign maml:encrypt maml:decrypt quantum:run openai:query receipts:read"
MISSING_KEY = "0123456789abcdef0123456789abcdef"  # 32 hex digits, the form of a key id; no such key
BELL = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\n'


@dataclass
class Run:
    """What one (transport, SDK) client run saw: `main` for a caller with every scope the calls need,
    `narrow` for a caller with only maml:read (stdio: MACROSLOW_LOCAL_SCOPES; HTTP: its token)."""

    transport: str
    sdk: str
    main: dict[str, Any]
    narrow: dict[str, Any]
    labels: list[str]

    def __getitem__(self, label: str) -> dict[str, Any]:
        entry: dict[str, Any] = self.main["results"][self.labels.index(label)]
        return entry

    def describe(self) -> str:
        return f"{self.main['package']}@{self.main['version']} over {self.transport}"


def writable_by(document: str, *writers: str) -> str:
    """The example with its permissions.write naming `writers` (sign_maml needs write)."""
    line = "  write: [agent://local]\n"
    assert line in document, "the bundled example no longer has the permissions.write line these tests edit"
    return document.replace(line, f"  write: [{', '.join(writers)}]\n")


def calls(signed: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, tool, arguments), in the order the client makes them; list_receipts last, so it has
    receipts to list. The HTTP caller is agent://alice, the stdio one agent://local."""
    example = example_workflow()
    ours = writable_by(example, "agent://local", "agent://alice")
    theirs = writable_by(example, "agent://someone-else")
    return [
        ("validate", "validate_maml", {"document": example}),
        ("sign", "sign_maml", {"document": ours}),
        ("verify", "verify_maml", {"document": signed}),
        ("sign_missing_key", "sign_maml", {"document": ours, "key_id": MISSING_KEY}),
        ("verify_too_large", "verify_maml", {"document": example + "\n" + "x" * MAX_DOCUMENT_BYTES}),
        ("sign_no_arguments", "sign_maml", {}),
        ("list_receipts_wrong_type", "list_receipts", {"limit": "many"}),
        ("sign_not_permitted", "sign_maml", {"document": theirs}),
        ("run", "run_quantum_circuit", {"circuit": BELL, "shots": 256, "seed": 3}),
        ("run_too_many_shots", "run_quantum_circuit", {"circuit": BELL, "shots": 10**9}),
        ("run_bad_qasm", "run_quantum_circuit", {"circuit": "OPENQASM 2.0;\nqreg q[2;\n"}),
        ("cancel_unknown_job", "cancel_job", {"job_id": "no-such-job"}),
        ("query_unconfigured", "query_openai", {"prompt": "hello"}),
        ("encrypt_unknown_recipient", "encrypt_maml", {"document": example, "recipients": [MISSING_KEY]}),
        ("decrypt_garbage", "decrypt_maml", {"sealed": "not a sealed document"}),
        ("verify_unknown_receipt", "verify_receipt", {"receipt_id": "no-such-receipt"}),
        ("list_receipts", "list_receipts", {"limit": 50}),
    ]


NARROW_CALLS = [("sign_without_scope", "sign_maml", {"document": example_workflow()})]


@pytest.fixture(
    scope="module",
    params=[(t, s) for t in TRANSPORTS for s in SDKS],
    ids=[f"{t}-{s}" for t in TRANSPORTS for s in SDKS],
)
def run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, run_client: RunClient
) -> Iterator[Run]:
    transport, sdk = request.param
    base = tmp_path_factory.mktemp(f"interop-{transport}-{sdk}")
    home = base / "home"
    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    initialize(settings)
    signed = sign_document(example_workflow(), open_keys(settings)).signed_document
    planned = calls(signed)
    server_env = {"MACROSLOW_MAX_DOCUMENT_BYTES": str(MAX_DOCUMENT_BYTES)}

    def plan(spec: dict[str, Any], todo: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
        return {
            "sdk": sdk,
            "transport": spec,
            "calls": [{"name": name, "arguments": args} for _, name, args in todo],
            "timeoutMs": 90_000,
        }

    if transport == "stdio":

        def stdio(**env: str) -> dict[str, Any]:
            return {
                "kind": "stdio",
                "command": SERVE[0],
                "args": SERVE[1:],
                "env": {**_env(home), **server_env, **env},
                "cwd": str(base),
            }

        main, narrow = run_client(
            [plan(stdio(), planned), plan(stdio(MACROSLOW_LOCAL_SCOPES="maml:read"), NARROW_CALLS)]
        )
    else:
        full, reader = mint(home, scope=FULL_SCOPES), mint(home, sub="reader", scope="maml:read")
        server = cast(Generator[str], start_server(base, "streamable-http", env=server_env))
        url = f"{next(server)}/mcp"
        try:
            main, narrow = run_client(
                [
                    plan({"kind": "http", "url": url, "token": full}, planned),
                    plan({"kind": "http", "url": url, "token": reader}, NARROW_CALLS),
                ]
            )
        finally:
            server.close()
    for name, output in (("main", main), ("narrow", narrow)):  # for a look after a failure
        (base / f"client-{name}.json").write_text(json.dumps(output, indent=2))
    yield Run(transport, sdk, main, narrow, [label for label, _, _ in planned])


def returned(run: Run, entry: dict[str, Any], label: str) -> dict[str, Any]:
    """The CallToolResult the client handed back; fails with what it threw instead."""
    assert entry["ok"], (
        f"{run.describe()}: {label}: the TypeScript client threw instead of returning the result: "
        f"{entry['thrown']!r}"
    )
    result: dict[str, Any] = entry["result"]
    return result


def test_lists_our_tools(run: Run) -> None:
    assert {"validate_maml", "sign_maml", "verify_maml", "list_receipts"} <= set(run.main["tools"])
    # The maml:read caller is not offered sign_maml (but calling it must still be answered cleanly).
    assert "sign_maml" not in run.narrow["tools"] and "verify_maml" in run.narrow["tools"]


@pytest.mark.parametrize("label", ["validate", "sign", "verify", "run", "list_receipts"])
def test_success_has_structured_content(run: Run, label: str) -> None:
    result = returned(run, run[label], label)
    assert result.get("isError") is not True, result
    structured = result.get("structuredContent")
    assert isinstance(structured, dict), result
    # The client validated it against the outputSchema already; check it says what it should.
    if label == "validate":
        assert structured["valid"] is True
    elif label == "sign":
        signed = structured["signed_document"]
        assert signed.startswith("---") and "signature:" in signed, structured
    elif label == "verify":
        assert structured["valid"] is True and structured["trusted"] is True, structured
    elif label == "run":
        assert structured["status"] == "succeeded" and sum(structured["counts"].values()) == 256, structured
    else:
        tools = {r["tool"] for r in structured["receipts"]}
        assert {"validate_maml", "sign_maml", "verify_maml"} <= tools, structured


ERROR_CASES = [
    ("sign_missing_key", "not_found"),
    ("verify_too_large", "request_too_large"),
    ("sign_no_arguments", "invalid_document"),
    ("list_receipts_wrong_type", "invalid_document"),
    # Scope granted, but the document's permissions.write does not name the caller.
    ("sign_not_permitted", "forbidden"),
    ("run_too_many_shots", "request_too_large"),
    ("run_bad_qasm", "invalid_document"),
    ("cancel_unknown_job", "not_found"),
    ("query_unconfigured", "backend_unavailable"),
    ("encrypt_unknown_recipient", "not_found"),
    ("decrypt_garbage", "invalid_document"),
    ("verify_unknown_receipt", "not_found"),
]


def test_every_tool_is_called(run: Run) -> None:
    """Each tool declares an output schema, so each one's error results must pass a 1.x client."""
    assert {name for _, name, _ in calls("")} == set(run.main["tools"])


def assert_error_result(run: Run, entry: dict[str, Any], label: str, code: str) -> None:
    result = returned(run, entry, label)
    where = f"{run.describe()}: {label}"
    assert result.get("isError") is True, f"{where}: not an error result: {result}"
    assert "structuredContent" not in result, (
        f"{where}: an error result must carry no structuredContent (1.x TS clients validate it "
        f"against the outputSchema): {result}"
    )
    content = result.get("content") or []
    assert content and content[0].get("type") == "text", f"{where}: {result}"
    first_line = content[0]["text"].splitlines()[0]
    assert first_line.startswith(f"{code}: "), f"{where}: text should start with '{code}: ': {first_line!r}"
    meta = (result.get("_meta") or {}).get(ERROR_META)
    assert isinstance(meta, dict), f"{where}: no _meta[{ERROR_META!r}]: {result}"
    assert meta.get("code") == code and meta["code"] in ERROR_CODES, f"{where}: {meta}"
    assert isinstance(meta.get("message"), str) and meta["message"], f"{where}: {meta}"
    assert isinstance(meta.get("details", {}), dict), f"{where}: {meta}"


@pytest.mark.parametrize(("label", "code"), ERROR_CASES, ids=[label for label, _ in ERROR_CASES])
def test_error_result_reaches_the_host(run: Run, label: str, code: str) -> None:
    assert_error_result(run, run[label], label, code)


def test_call_without_the_scope(run: Run) -> None:
    """A caller with only maml:read calls sign_maml anyway (it is not in its tools/list). Over stdio the
    tool answers: a clean `forbidden` error result. Over HTTP the ScopeGate answers 403
    insufficient_scope before any tool runs (so a host can step up): the TS client throws, and its
    message names the missing scope."""
    [entry] = run.narrow["results"]
    if run.transport == "stdio":
        assert_error_result(run, entry, "sign_without_scope", "forbidden")
    else:
        assert not entry["ok"], f"{run.describe()}: expected the HTTP 403 to be thrown: {entry}"
        assert "maml:sign" in entry["thrown"], entry
