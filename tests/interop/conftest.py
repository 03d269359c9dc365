"""Fixtures for driving the server with another implementation's client: the official TypeScript MCP
SDK (npm `@modelcontextprotocol/sdk`, and the 2.x `@modelcontextprotocol/client`) and the tasks
requester `@modelcontextprotocol/ext-tasks`, installed once per session with `npm ci` from the
pinned lockfile in tests/interop/ts, and run through `ts/client.mjs` (and its siblings)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

TS_DIR = Path(__file__).parent / "ts"
CLIENT = TS_DIR / "client.mjs"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "interop: drives the server with another implementation's client (TypeScript MCP SDK)"
    )


@pytest.fixture(scope="session")
def npm_installed() -> float:
    """Install the pinned TypeScript SDKs (tests/interop/ts/package-lock.json) once per session;
    returns the seconds `npm ci` took. Skipped only when node or npm is missing: a failing install
    is a failure."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if path is None)
        pytest.skip(f"{missing} not on PATH: the TypeScript SDK interop tests need Node.js 20+ and npm")
    started = time.monotonic()
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=TS_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"npm ci in {TS_DIR} did not finish in {exc.timeout} s")
    if done.returncode != 0:
        pytest.fail(
            f"npm ci in {TS_DIR} failed (exit {done.returncode}):\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return time.monotonic() - started


@pytest.fixture(scope="session")
def run_client(npm_installed: float) -> Callable[[Sequence[dict[str, Any]]], list[dict[str, Any]]]:
    """Run `client.mjs` once per plan, all plans at once (each is its own node process); returns the
    JSON documents in plan order. A client that could not connect, list tools or finish in time
    fails the test with its stderr (which carries a stdio server's log)."""
    node = shutil.which("node")
    assert node is not None

    def one(plan: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """(output, failure): the client's JSON document, or why there is none to use."""
        where = f"client.mjs ({plan['sdk']}, {plan['transport']['kind']})"
        try:
            done = subprocess.run(
                [node, str(CLIENT)],
                cwd=TS_DIR,
                input=json.dumps(plan),
                capture_output=True,
                text=True,
                timeout=150,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            return None, f"{where} hung past {exc.timeout} s; stderr:\n{stderr[-4000:]}"
        try:
            output: dict[str, Any] = json.loads(done.stdout)
        except json.JSONDecodeError:
            return None, (
                f"{where} exit {done.returncode}, no JSON on stdout:\n{done.stdout[-2000:]}\n"
                f"stderr:\n{done.stderr[-4000:]}"
            )
        if done.returncode != 0 or "fatal" in output:
            return (
                None,
                f"{where} exit {done.returncode}: {output.get('fatal')}\nstderr:\n{done.stderr[-4000:]}",
            )
        output["stderr"] = done.stderr
        return output, ""

    def run(plans: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(max_workers=max(1, len(plans))) as pool:
            done = list(pool.map(one, plans))
        outputs = []
        for output, failure in done:
            if output is None:
                pytest.fail(failure)
            outputs.append(output)
        return outputs

    return run
