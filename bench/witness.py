"""Witnessing on the call path (issue 16): sequential `verify_maml` calls over stdio, one server with
witnesses in the default mode (cosignatures collected in the background) next to one in strict mode
(each answer waits for the quorum of two loopback witnesses), interleaved in the same run.

    .venv/bin/python bench/witness.py      (also part of bench/run.py)

Target: strict mode at least 0.5x the default mode's calls per second. The witnesses are two
`macroslow-mcp witness serve` processes on loopback ports; the servers share a home (whose key
signed the document) and each has its own ledger database and log, known to both witnesses.
Printed too: a server with no witnesses. The default mode puts nothing on the call path, but on a
2-core machine the background submissions and the witnesses share the CPUs with the server, so
its rate is printed next to that one's.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from replicas import _port, _start  # the process helpers of bench/replicas.py
from run import (
    STDIO,
    UNLIMITED_RATE,
    VERIFY,
    BenchError,
    Server,
    connect,
    make_fixture,
    report,
    side_by_side,
    tool_sampler,
)

MIN_STRICT_RATIO = 0.5


def _log_vkey(home: Path, database: str) -> str:
    from mcp_server.db import open_engine
    from mcp_server.home import initialize, open_keys
    from mcp_server.ledger.store import Ledger
    from mcp_server.settings import Settings
    from mcp_server.witness import cosignature

    settings = Settings(home=home, log_level="WARNING", database_url=database)
    initialize(settings, example=False)
    ledger = Ledger(open_engine(settings.database, durable=True), open_keys(settings))
    try:
        keys = ledger.keys
        public = keys.public_key(ledger.log_key_id) if keys and ledger.log_key_id else None
        if public is None:
            raise BenchError("the ledger has no log key")
        return cosignature.vkey(ledger.origin, public)
    finally:
        ledger.engine.dispose()


def _witness_vkey(config: Path) -> str:
    from mcp_server.witness.service import load_config, load_or_create_key

    loaded = load_config(config)
    from mcp_server.witness import cosignature

    return cosignature.vkey(loaded.name, load_or_create_key(loaded.key_file).public_key())


def _server(home: Path, database: str, **env: str) -> Server:
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", "serve", "--transport", "stdio"],
        env={
            "MACROSLOW_HOME": str(home),
            "MACROSLOW_DATABASE_URL": database,
            "MACROSLOW_LOG_LEVEL": "WARNING",
            **UNLIMITED_RATE,
            **env,
        },
    )
    return Server("macroslow-mcp", params, VERIFY)


async def bench_witness() -> bool:
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="macroslow-bench-witness-") as tmp:
        work = Path(tmp)
        fixture = make_fixture(work / "home")  # the servers' home: its key signed the document
        databases = {name: f"sqlite:///{work / name}.db" for name in ("none", "default", "strict")}
        logs = [_log_vkey(work / "home", url) for url in databases.values()]
        witnesses = []
        for i in range(2):
            where = work / f"w{i}"
            where.mkdir()
            config = where / "witness.toml"
            entries = "".join(f'[[log]]\nvkey = "{vkey}"\n' for vkey in logs)
            config.write_text(f'name = "bench.witness/w{i}"\nkey_file = "w.key.pem"\n{entries}')
            port = _port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("MACROSLOW_")}
            cmd = [sys.executable, "-m", "mcp_server", "witness", "serve", "--config", str(config)]
            _start([*cmd, "--port", str(port)], env, port, stack)
            witnesses.append((f"w{i}", _witness_vkey(config), f"http://127.0.0.1:{port}"))
        policy = work / "policy"
        lines = [f"witness {name} {vkey} {url}" for name, vkey, url in witnesses]
        policy.write_text("\n".join([*lines, "group both 2 w0 w1", "quorum both"]) + "\n")
        home = work / "home"
        servers = {
            "none": _server(home, databases["none"]),
            "default": _server(home, databases["default"], MACROSLOW_WITNESS_POLICY=str(policy)),
            "strict": _server(
                home,
                databases["strict"],
                MACROSLOW_WITNESS_POLICY=str(policy),
                MACROSLOW_WITNESS_MODE="strict",
            ),
        }
        with (work / "stderr.log").open("w", encoding="utf-8") as errlog:
            async with AsyncExitStack() as clients:
                samplers = {}
                for name, server in servers.items():
                    client = await clients.enter_async_context(connect(server, errlog))
                    samplers[name] = await tool_sampler(client, VERIFY, fixture.signed)
                t = await side_by_side(samplers, STDIO)
    ratio = t["default"] / t["strict"]
    report(
        "verify_maml over stdio, witnesses (default)",
        f"{1 / t['default']:.0f} calls/s; with no witnesses configured {1 / t['none']:.0f} calls/s",
    )
    return report(
        "  strict mode, 2 loopback witnesses",
        f"{1 / t['strict']:.0f} calls/s = {ratio:.2f}x the default mode (each answer waits for both)",
        f"target >= {MIN_STRICT_RATIO:.1f}x",
        ratio >= MIN_STRICT_RATIO,
    )


if __name__ == "__main__":
    sys.exit(0 if anyio.run(bench_witness) else 1)
