"""bench/conformance.py: the official MCP conformance suite's server scenarios against this server.

Its arguments and its verdicts are checked here without Node; the last test runs the script for
real (it installs Node 22 and the pinned suite with npm on the first run, a few seconds after that)
and checks the verdict for every scenario that applies to this server: each one passes.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "conformance.py"
# The scenarios that test any server, without the suite's fixture tools, prompts and resources.
GENERIC = {
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "dns-rebinding-protection",
}


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_conformance", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def conformance() -> ModuleType:
    return load()


def test_parses_its_arguments(conformance: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    args = conformance.parse_args(["--scenario", "ping", "--scenario", "tools-list", "--url", "http://h/mcp"])
    assert args.scenario == ["ping", "tools-list"] and args.url == "http://h/mcp" and not args.skip_install
    assert conformance.parse_args([]).scenario == []
    with pytest.raises(SystemExit) as exc:
        conformance.parse_args(["--scenario", "no-such-scenario"])
    assert exc.value.code == 2 and "unknown scenario" in capsys.readouterr().err


def offer(conformance: ModuleType, **kwargs: Any) -> Any:
    """What this server offers: no fixture names, no logging capability, no session."""
    capabilities = {"tools": {}, "resources": {"subscribe": True}, "prompts": {}, "completions": {}}
    return conformance.Offer({"name": "macroslow-mcp"}, "2025-11-25", capabilities, False, **kwargs)


def checks(*statuses: str) -> list[dict[str, Any]]:
    return [{"status": s, "errorMessage": "boom" if s == "FAILURE" else None} for s in statuses]


def test_a_missing_fixture_makes_a_scenario_not_applicable(conformance: ModuleType) -> None:
    """The suite's "pass" for tools-call-simple-text against an unknown tool (its error result is
    text) must not count; a failing generic scenario must."""
    ours = offer(conformance, tools={"validate_maml"})
    results = {
        "tools-call-simple-text": checks("SUCCESS"),
        "ping": checks("SUCCESS"),
        "tools-list": checks("SUCCESS", "FAILURE"),
        "logging-set-level": checks("FAILURE"),
        "server-sse-multiple-streams": checks("WARNING"),
        "brand-new-scenario": checks("SUCCESS"),
    }
    rows = {r.scenario: r for r in conformance.judge(dict.fromkeys(results, "2025-11-25"), results, ours)}
    assert (rows["tools-call-simple-text"].suite, rows["tools-call-simple-text"].verdict) == ("pass", "n/a")
    assert "fixture tool test_simple_text" in rows["tools-call-simple-text"].note
    assert rows["ping"].verdict == "pass"
    assert rows["tools-list"].verdict == "fail" and "boom" in rows["tools-list"].note
    assert (
        rows["logging-set-level"].verdict == "n/a" and "capability logging" in rows["logging-set-level"].note
    )
    assert rows["server-sse-multiple-streams"].verdict == "n/a"
    assert rows["brand-new-scenario"].note.startswith("not in REQUIRES")
    # With the fixture there, the suite's word counts.
    fixture = offer(conformance, tools={"test_simple_text"})
    [row] = conformance.judge(
        {"tools-call-simple-text": "x"}, {"tools-call-simple-text": checks("FAILURE")}, fixture
    )
    assert row.verdict == "fail"


@pytest.mark.subprocess
@pytest.mark.interop
def test_every_applicable_scenario_passes(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm not on PATH: bench/conformance.py installs Node 22 and the suite with npm")
    report = tmp_path / "conformance.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(report)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode != 2, f"broken run:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    found = json.loads(report.read_text())
    rows = {r["scenario"]: r for r in found["rows"]}
    assert not [r for r in rows.values() if r["verdict"] not in ("pass", "n/a")], done.stdout
    assert {s for s, r in rows.items() if r["verdict"] == "pass"} == GENERIC, done.stdout
    assert done.returncode == 0, done.stdout

    def error(scenario: str) -> str:
        return " ".join(c.get("errorMessage") or "" for c in rows[scenario]["checks"])

    # What docs/interop.md says the server answers to two scenarios that do not apply to it.
    if "logging" not in found["capabilities"]:  # no logging capability: logging/setLevel is unknown
        assert "-32601" in error("logging-set-level"), rows["logging-set-level"]
    if "completions" in found["capabilities"]:  # a prompt it does not have: Invalid params
        assert "-32602" in error("completion-complete"), rows["completion-complete"]
