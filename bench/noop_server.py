"""The floors for the stdio benchmarks: the same SDK serving one tool that does nothing, and one
that does nothing but commit one durable row per call.

`noop` is async like the project's tools: a sync tool would be run in a worker thread by the SDK,
which would make the floor slower than the thing it is a floor for. The log level matches what
the benchmark gives the project's server (`MACROSLOW_LOG_LEVEL=WARNING`).

`noop_server.py durable PATH` serves `noop` that, before answering, commits one row (the
document's digest) to a SQLite file as durably as the ledger does (WAL, `synchronous=FULL`,
`BEGIN IMMEDIATE`), on a worker thread as the project's server does: the honest floor for a tool
call that leaves a durable record (issue 15).
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("noop", log_level="WARNING")


@server.tool()
async def noop(document: str) -> str:
    """Accept a document and answer "ok" without looking at it."""
    return "ok"


def durable_server(path: str) -> MCPServer:
    import hashlib
    import sqlite3

    import anyio.to_thread

    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, digest TEXT NOT NULL)")

    def commit(digest: str) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO records (digest) VALUES (?)", (digest,))
        db.execute("COMMIT")

    durable = MCPServer("noop", log_level="WARNING")

    @durable.tool(name="noop")
    async def noop_durable(document: str) -> str:
        """Commit one durable row for the document, then answer "ok"."""
        await anyio.to_thread.run_sync(commit, hashlib.sha256(document.encode()).hexdigest())
        return "ok"

    return durable


def serve_http(port: int) -> None:
    """The same tool over Streamable HTTP (stateless, as `serve` runs it), for bench/replicas.py."""
    import uvicorn

    app = server.streamable_http_app(stateless_http=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["http"]:
        serve_http(int(sys.argv[2]))
    elif sys.argv[1:2] == ["durable"]:
        durable_server(sys.argv[2]).run("stdio")
    else:
        server.run("stdio")
