"""`serve` stops cleanly on SIGTERM and SIGINT and then exits 0 (uvicorn raised the caught signal
again after its graceful shutdown, so the process died of it: status -15, read as a failure)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.server.test_transports import INITIALIZE, SERVE, _env, _free_port

pytestmark = [pytest.mark.subprocess]


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready: {log.read_text()}")


def _stop(proc: subprocess.Popen[bytes], signum: int) -> int:
    proc.send_signal(signum)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.parametrize(
    ("args", "signum"),
    [
        (["--transport", "streamable-http"], signal.SIGTERM),
        (["--transport", "streamable-http"], signal.SIGINT),
        (["--transport", "sse"], signal.SIGTERM),
        (["--transport", "streamable-http", "--workers", "2"], signal.SIGTERM),
    ],
    ids=["streamable-http-term", "streamable-http-int", "sse-term", "two-workers-term"],
)
def test_http_serve_exits_0_after_a_clean_shutdown(tmp_path: Path, args: list[str], signum: int) -> None:
    port = _free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*SERVE, *args, "--port", str(port)],
            env=_env(tmp_path / "home"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_listening(proc, port, log_path)
            status = _stop(proc, signum)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log_path.read_text()
    assert status == 0, text
    assert "shutdown complete" in text and "shutdown incomplete" not in text, text
    if "--workers" in args:  # every worker closed its own services
        assert text.count("shutdown complete: the services are closed") == 2, text
        assert "shutdown complete: every worker stopped cleanly" in text, text
    assert "Traceback" not in text, text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_stdio_serve_exits_0_after_a_clean_shutdown(tmp_path: Path, signum: int) -> None:
    """The client keeps stdin open: the signal alone ends the server, after the services (opened by
    `notifications/initialized`) are closed."""
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*SERVE, "--transport", "stdio"],
            env=_env(tmp_path / "home"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["id"] == 1
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            proc.stdin.write(json.dumps(initialized).encode() + b"\n")
            proc.stdin.flush()
            call = {  # a tool call opens the services (and leaves a receipt)
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "verify_maml", "arguments": {"document": "x"}},
            }
            proc.stdin.write(json.dumps(call).encode() + b"\n")
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["id"] == 2
            status = _stop(proc, signum)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdin.close()
            proc.stdout.close()
    text = log_path.read_text()
    assert status == 0, text
    assert "shutdown complete: the services are closed" in text, text
    assert "Traceback" not in text, text
