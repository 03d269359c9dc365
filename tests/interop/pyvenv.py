"""Virtualenvs for other Python MCP clients (the 1.x SDK, an agent framework's adapter), made by the
test run itself and never mixed into the project's own venv.

Each is kept under tests/interop/.cache/ (git-ignored by tests/interop/.gitignore), named after the
pinned requirements and the interpreter's version, so a second run reuses it and a changed pin
builds a new one. A venv counts as built only once pip finished: the stamp file is written last.
Builds of one venv take turns through a lock file, so two pytest processes never half-build it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CACHE = Path(__file__).parent / ".cache"
PYCLIENTS = Path(__file__).parent / "pyclients"
STAMP = ".macroslow-installed.json"
# What pip prints when the registry cannot be reached (no network, DNS, proxy): the install is then
# skipped, not failed. Anything else (a resolver conflict, a build error) fails the test.
OFFLINE_MARKERS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ProxyError",
    "Could not fetch URL",
    "No matching distribution found",
)


@dataclass(frozen=True)
class Venv:
    python: Path
    requirements: tuple[str, ...]
    installed: dict[str, str]  # distribution -> version, as pip reports it
    build_seconds: float  # 0.0 when the cached venv was reused

    def version(self, distribution: str) -> str:
        return self.installed[distribution.lower().replace("_", "-")]


def venv_dir(name: str, requirements: Sequence[str]) -> Path:
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    key = hashlib.sha256(json.dumps([py, sorted(requirements)]).encode()).hexdigest()[:10]
    return CACHE / f"{name}-{py}-{key}"


def cached_venv(name: str, requirements: Sequence[str], *, timeout: float = 900) -> Venv:
    """The venv `name` holding `requirements` (pip specifiers, pinned), built if missing. Skips the
    calling test when the registry cannot be reached; fails it when pip fails otherwise."""
    root = venv_dir(name, requirements)
    python = root / "bin" / "python"
    stamp = root / STAMP
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{root.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if stamp.exists() and python.exists():
                return Venv(python, tuple(requirements), json.loads(stamp.read_text())["installed"], 0.0)
            started = time.monotonic()
            shutil.rmtree(root, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(root)], f"python -m venv {root}", timeout=120)
            _pip(python, ["install", "--no-input", "--progress-bar", "off", *requirements], timeout)
            installed = _installed(python)
            stamp.write_text(json.dumps({"requirements": list(requirements), "installed": installed}))
            return Venv(python, tuple(requirements), installed, time.monotonic() - started)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pip(python: Path, args: list[str], timeout: float) -> None:
    command = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"pip {' '.join(args)} did not finish in {exc.timeout} s")
    if done.returncode != 0:
        output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        if any(marker in output for marker in OFFLINE_MARKERS):
            pytest.skip(
                f"pip could not reach the package registry to install {args[-1]!r}:\n{output[-1500:]}"
            )
        pytest.fail(f"pip {' '.join(args)} failed (exit {done.returncode}):\n{output}")


def _installed(python: Path) -> dict[str, str]:
    out = _run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "list", "--format", "json"],
        "pip list",
        timeout=120,
    )
    return {row["name"].lower().replace("_", "-"): row["version"] for row in json.loads(out)}


def _run(command: list[str], what: str, *, timeout: float) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def run_script(venv: Venv, script: str, plan: Mapping[str, Any], *, timeout: float = 120) -> dict[str, Any]:
    """Run pyclients/`script` with the venv's python, `plan` as JSON on stdin; returns the JSON document
    it prints. A script that crashed, printed no JSON or hung fails the test with its stderr (which
    carries a stdio server's log)."""
    where = f"{script} ({venv.python.parent.parent.name})"
    try:
        done = subprocess.run(
            [str(venv.python), str(PYCLIENTS / script)],
            input=json.dumps(plan),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=PYCLIENTS,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"{where} hung past {exc.timeout} s; stderr:\n{stderr[-4000:]}")
    try:
        output: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"{where} exit {done.returncode}, no JSON on stdout:\n{done.stdout[-2000:]}\n"
            f"stderr:\n{done.stderr[-4000:]}"
        )
    if done.returncode != 0 or "fatal" in output:
        pytest.fail(f"{where} exit {done.returncode}: {output.get('fatal')}\nstderr:\n{done.stderr[-4000:]}")
    output["stderr"] = done.stderr
    return output
