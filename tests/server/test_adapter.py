"""The adapter owns every call: declarations, argument validation, error shape, one receipt per
call, refusals (receipt + audit line + metric together), services opened whole or not at all."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from mcp.client import Client
from pydantic import BaseModel
from sqlalchemy import select

import tools
from mcp_server import metrics
from mcp_server.adapters import ERROR_META, ToolRegistry, UndeclaredTool, error_of
from mcp_server.calls import Call
from mcp_server.db import open_engine
from mcp_server.errors import BackendUnavailable
from mcp_server.home import example_workflow
from mcp_server.ledger.models import ReceiptRow
from mcp_server.policy.operations import OPERATIONS
from mcp_server.server import build_server
from mcp_server.settings import Settings

pytestmark = pytest.mark.anyio


def receipt_rows(settings: Settings) -> list[dict[str, Any]]:
    engine = open_engine(settings.database)
    try:
        with engine.connect() as conn:
            table = ReceiptRow.__table__
            return [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c.seq))]
    finally:
        engine.dispose()


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "mcp_server.audit"]


def denials(code: str) -> float:
    return metrics.DENIALS.labels(code)._value.get()  # type: ignore[attr-defined,no-any-return]


# -- declarations ------------------------------------------------------------------------------------


async def test_annotations_follow_the_operations_table(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    assert set(listed) == {name for name in OPERATIONS if "://" not in name}
    for name, tool in listed.items():
        op = OPERATIONS[name]
        assert tool.annotations == op.annotations(), name
        assert tool.annotations.read_only_hint is (not op.changes_or_spends), name
        if op.signs or op.spends:
            assert tool.annotations.read_only_hint is False, name
    assert listed["sign_maml"].annotations.read_only_hint is False  # signs with the server's key
    assert listed["cancel_job"].annotations.destructive_hint is True


async def test_read_only_mode_offers_exactly_the_read_only_tools(
    make_settings: Callable[..., Settings],
) -> None:
    async with Client(build_server(make_settings())) as client:
        everything = (await client.list_tools()).tools
    async with Client(build_server(make_settings(read_only=True))) as client:
        offered = {t.name for t in (await client.list_tools()).tools}
    assert offered == {t.name for t in everything if t.annotations and t.annotations.read_only_hint}


def test_a_tool_needs_an_operation_and_a_call_record() -> None:
    registry = ToolRegistry()

    class Out(BaseModel):
        ok: bool

    async def delete_everything(call: Call) -> Out:
        return Out(ok=True)

    with pytest.raises(UndeclaredTool, match=r"no operation in mcp_server/policy/operations\.py"):
        registry.tool(title="x")(delete_everything)

    async def validate_maml(document: str) -> Out:  # a known name, but no `call` parameter
        return Out(ok=True)

    with pytest.raises(UndeclaredTool, match="call record"):
        registry.tool(title="x")(validate_maml)

    async def sign_maml(call: Call, text: str) -> Out:  # declares a document argument it lacks
        return Out(ok=True)

    with pytest.raises(UndeclaredTool, match="not an argument"):
        registry.tool(title="x", document="document")(sign_maml)


def test_a_server_with_an_undeclared_tool_does_not_start(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Out(BaseModel):
        ok: bool

    rogue = ModuleType("rogue")

    def register(registry: ToolRegistry) -> None:
        @registry.tool(title="Drop the ledger")
        async def drop_ledger(call: Call) -> Out:
            return Out(ok=True)

    rogue.register = register  # type: ignore[attr-defined]
    monkeypatch.setattr(tools, "MODULES", (*tools.MODULES, rogue))
    with pytest.raises(UndeclaredTool, match="drop_ledger"):
        build_server(make_settings())


# -- bad arguments: stable code, one receipt ---------------------------------------------------------

BAD_ARGUMENTS: dict[str, list[dict[str, Any]]] = {
    "validate_maml": [{}, {"document": 5}],
    "sign_maml": [{}, {"document": ["x"]}, {"document": "x", "key_id": 12}],
    "verify_maml": [{}, {"document": "x", "detached_signature": 3}],
    "list_receipts": [{"limit": "many"}, {"limit": 0}, {"decision": "maybe"}],
    "verify_receipt": [{}, {"receipt_id": 7}],
    "run_quantum_circuit": [{}, {"circuit": "x", "shots": "lots"}, {"circuit": "x", "shots": 0}],
    "cancel_job": [{}, {"job_id": 1}, {"job_id": "x" * 65}],
    "query_openai": [{"temperature": "hot"}, {"max_tokens": 0}, {"output_schema": "any"}],
    "encrypt_maml": [{}, {"document": "x", "recipients": "abc"}, {"document": "x", "recipients": []}],
    "decrypt_maml": [{}, {"sealed": 1.5}],
}


def test_every_tool_has_bad_argument_cases() -> None:
    assert set(BAD_ARGUMENTS) == {name for name in OPERATIONS if "://" not in name}


@pytest.mark.parametrize("tool", sorted(BAD_ARGUMENTS))
async def test_bad_arguments_have_a_stable_code_and_one_receipt(
    make_settings: Callable[..., Settings], tool: str
) -> None:
    settings = make_settings()
    cases = BAD_ARGUMENTS[tool]
    async with Client(build_server(settings)) as client:
        await client.list_tools()
        results = [await client.call_tool(tool, arguments) for arguments in cases]
    for arguments, result in zip(cases, results, strict=True):
        assert result.is_error, arguments
        assert result.structured_content is None
        error = error_of(result)
        assert error is not None and error["code"] == "invalid_document", (arguments, error)
        text = result.content[0].text
        assert text.startswith(f"invalid_document: field '{error['details']['field']}'"), text
        assert "input schema" in text
        assert "Error executing tool" not in text and "pydantic" not in text
        for value in arguments.values():  # the caller's values are not echoed back
            if isinstance(value, str) and len(value) > 3:
                assert value not in text
    rows = [r for r in receipt_rows(settings) if r["tool"] == tool]
    assert len(rows) == len(cases)
    assert all(r["decision"] == "denied" and r["outcome"] == "invalid_document" for r in rows)
    assert all(r["principal"] == "agent://local" and r["arguments_digest"] for r in rows)


# -- error results -----------------------------------------------------------------------------------


async def test_error_results_carry_code_message_and_details_without_structured_content(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(max_document_bytes=4096)
    async with Client(build_server(settings)) as client:
        await client.list_tools()
        big = await client.call_tool("sign_maml", {"document": example_workflow() + "x" * 5000})
        missing = await client.call_tool("sign_maml", {"document": example_workflow(), "key_id": "0" * 32})
    assert big.is_error and big.structured_content is None
    error = big.meta[ERROR_META]  # type: ignore[index]
    assert error["code"] == "request_too_large" and error["details"]["allowed"] == 4096
    first, details = big.content[0].text.split("\n")
    assert first == f"request_too_large: {error['message']}"
    assert json.loads(details.removeprefix("details: ")) == error["details"]
    assert error_of(missing) == {"code": "not_found", "message": error_of(missing)["message"]}
    assert missing.content[0].text == f"not_found: {error_of(missing)['message']}"  # no details line


async def test_an_unexpected_failure_is_internal_error_with_a_receipt_and_no_leak(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tools.verify_maml

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("disk on fire at /srv/secret/path")

    monkeypatch.setattr(tools.verify_maml, "inspect_signature", broken)
    settings = make_settings()
    caplog.set_level(logging.ERROR, logger="mcp_server.tools")
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("verify_maml", {"document": example_workflow()})
    assert result.is_error and result.structured_content is None
    assert error_of(result)["code"] == "internal_error"
    assert "/srv/secret" not in result.content[0].text and "fire" not in result.content[0].text
    assert "disk on fire" in caplog.text  # the operator sees it in the log
    [row] = [r for r in receipt_rows(settings) if r["tool"] == "verify_maml"]
    assert row["outcome"] == "internal_error" and row["decision"] == "allowed"
    assert "/srv/secret" not in (row["reason"] or "")


# -- refusals: receipt, audit line and metric together -----------------------------------------------


async def test_a_refusal_in_a_tool_body_is_receipted_audited_and_counted(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(local_scopes=["receipts:read"])
    caplog.set_level(logging.INFO, logger="mcp_server.audit")
    before = denials("forbidden")
    async with Client(build_server(settings)) as client:
        peek = await client.call_tool("list_receipts", {"principal": "agent://someone-else"})
    assert error_of(peek)["code"] == "forbidden"
    assert error_of(peek)["details"]["required_scope"] == "receipts:audit"
    [line] = audit_lines(caplog)
    assert line["operation"] == "list_receipts" and line["code"] == "forbidden"
    assert denials("forbidden") == before + 1
    [row] = receipt_rows(settings)
    assert row["decision"] == "denied" and row["outcome"] == "forbidden"


async def test_a_refusal_after_parsing_is_receipted_audited_and_counted(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(max_qubits=2)
    caplog.set_level(logging.INFO, logger="mcp_server.audit")
    before = denials("request_too_large")
    circuit = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\nh q[0];\n'
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("run_quantum_circuit", {"circuit": circuit})
    assert error_of(result)["code"] == "request_too_large"
    assert error_of(result)["details"] == {"requested": 3, "allowed": 2}
    [line] = audit_lines(caplog)
    assert line["operation"] == "run_quantum_circuit" and line["code"] == "request_too_large"
    assert denials("request_too_large") == before + 1
    [row] = receipt_rows(settings)
    assert row["decision"] == "denied" and row["outcome"] == "request_too_large"


async def test_a_failure_that_is_not_a_refusal_leaves_no_audit_line(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    caplog.set_level(logging.INFO, logger="mcp_server.audit")
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("sign_maml", {"document": example_workflow(), "key_id": "0" * 32})
    assert error_of(result)["code"] == "not_found"
    assert audit_lines(caplog) == []
    [row] = receipt_rows(settings)
    assert row["decision"] == "allowed" and row["outcome"] == "not_found"


# -- services: whole or not at all -------------------------------------------------------------------


async def test_services_open_whole_or_not_at_all(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.engine import Engine

    from mcp_server import services as services_module
    from mcp_server.quantum.service import JobService

    server = build_server(make_settings())
    with pytest.raises(BackendUnavailable):
        server.host.current()
    disposed: list[object] = []
    original_start, original_dispose = JobService.start, Engine.dispose

    def failing_start(self: JobService) -> None:
        raise RuntimeError("no threads today at /srv/secret")

    def dispose(self: Engine, *args: Any, **kwargs: Any) -> None:
        disposed.append(self)
        original_dispose(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "dispose", dispose)
    monkeypatch.setattr(JobService, "start", failing_start)
    async with server.host.open():  # the lifespan: the handshake does not wait for the services
        with pytest.raises(BackendUnavailable) as info:
            await server.host.ready()
        assert "/srv/secret" not in str(info.value)  # the reason is in the log, not the answer
        assert len(disposed) == 2  # the engine and the ledger's engine were closed again
        with pytest.raises(BackendUnavailable):
            server.host.current()
        with pytest.raises(BackendUnavailable):  # within RETRY_SECONDS: the same answer, no retry
            await server.host.ready()
        monkeypatch.setattr(JobService, "start", original_start)
        monkeypatch.setattr(services_module, "RETRY_SECONDS", 0.0)
        services = await server.host.ready()  # and it opens once the fault is gone
        assert server.host.current() is services
    async with Client(server) as client:
        assert not (await client.call_tool("validate_maml", {"document": example_workflow()})).is_error


async def test_a_call_while_the_database_is_unreachable_is_a_clean_error(
    make_settings: Callable[..., Settings],
) -> None:
    """The server answers the handshake and lists its tools; a call then says what is wrong."""
    settings = make_settings(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none")
    async with Client(build_server(settings)) as client:
        assert len((await client.list_tools()).tools) == len(BAD_ARGUMENTS)
        result = await client.call_tool("validate_maml", {"document": example_workflow()})
    assert result.is_error and error_of(result)["code"] == "backend_unavailable"


async def test_the_readme_error_example_is_what_the_server_sends(
    make_settings: Callable[..., Settings],
) -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Errors") :]
    example = json.loads(re.search(r"```json\n(.*?)```", section, re.DOTALL).group(1))  # type: ignore[union-attr]
    async with Client(build_server(make_settings(rate_per_minute=60, rate_burst=1))) as client:
        await client.call_tool("validate_maml", {"document": "x"})
        refused = await client.call_tool("validate_maml", {"document": "x"})
    sent = refused.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert set(sent) - {"resultType"} == set(example)  # resultType: "complete", the 2026 wire form
    assert sent["isError"] is example["isError"] is True
    error, shown = sent["_meta"][ERROR_META], example["_meta"][ERROR_META]
    assert error["code"] == shown["code"] == "rate_limited" and set(error["details"]) == set(shown["details"])
    text, shown_text = sent["content"][0]["text"], example["content"][0]["text"]
    assert text.split(" at most")[0] == shown_text.split(" at most")[0]
    assert text.split("\n")[1].startswith('details: {"retry_after": ')


# -- arguments as hosts send them --------------------------------------------------------------------


async def test_verify_maml_takes_the_detached_signature_the_cli_writes(
    make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mcp_server.cli import main

    settings = make_settings()
    document = tmp_path / "wf.maml.md"
    document.write_text(example_workflow())
    with pytest.raises(SystemExit) as done:
        main(["--home", str(settings.home), "sign", str(document), "--detached"])
    assert done.value.code in (0, None), capsys.readouterr()
    signature = (tmp_path / "wf.maml.md.sig").read_text()
    async with Client(build_server(settings)) as client:
        as_text = await client.call_tool(
            "verify_maml", {"document": example_workflow(), "detached_signature": signature}
        )
        as_object = await client.call_tool(
            "verify_maml", {"document": example_workflow(), "detached_signature": json.loads(signature)}
        )
    for result in (as_text, as_object):
        assert not result.is_error, result.content[0].text
        assert result.structured_content["valid"] is True and result.structured_content["trusted"] is True


async def test_json_text_is_decoded_only_where_a_string_cannot_go(
    make_settings: Callable[..., Settings],
) -> None:
    async with Client(build_server(make_settings())) as client:
        # A string argument holding JSON text stays text...
        listed = await client.call_tool("list_receipts", {"tool": '{"not": "a tool"}'})
        # ...and a list sent as JSON text (as some desktop hosts do) is decoded.
        sealed = await client.call_tool(
            "encrypt_maml", {"document": example_workflow(), "recipients": '["0"]'}
        )
    assert not listed.is_error and listed.structured_content["receipts"] == []
    error = error_of(sealed)
    assert error is not None and error["code"] == "key_error"  # it got as far as the recipient's id
    assert "malformed key id '0'" in error["message"]


async def test_no_server_path_reaches_a_caller(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages name no server path (an unknown key once said `... in /home/.../keys`), and anything
    path-like that slips into an error is scrubbed at the seam."""
    import tools.verify_maml
    from mcp_server.errors import NotFound

    settings = make_settings()
    home = str(settings.home)
    async with Client(build_server(settings)) as client:
        missing = await client.call_tool("sign_maml", {"document": example_workflow(), "key_id": "0" * 32})

        def leaky(*_: object, **__: object) -> None:
            raise NotFound(f"no such file {home}/keys/x.pem", where=f"{home}/keys")

        monkeypatch.setattr(tools.verify_maml, "inspect_signature", leaky)
        leaked = await client.call_tool("verify_maml", {"document": example_workflow()})
    assert error_of(missing)["code"] == "not_found" and home not in missing.content[0].text
    assert "this server's key store" in error_of(missing)["message"]
    error = error_of(leaked)
    assert home not in leaked.content[0].text and home not in json.dumps(error)
    assert error["message"] == "no such file <path>" and error["details"] == {"where": "<path>"}
