"""The floor for the stdio benchmarks: the same SDK serving one tool that does nothing.

`noop` is async like the project's tools: a sync tool would be run in a worker thread by the SDK,
which would make the floor slower than the thing it is a floor for. The log level matches what
the benchmark gives the project's server (`MACROSLOW_LOG_LEVEL=WARNING`).
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("noop", log_level="WARNING")


@server.tool()
async def noop(document: str) -> str:
    """Accept a document and answer "ok" without looking at it."""
    return "ok"


def serve_http(port: int) -> None:
    """The same tool over Streamable HTTP (stateless, as `serve` runs it), for bench/replicas.py."""
    import uvicorn

    app = server.streamable_http_app(stateless_http=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["http"]:
        serve_http(int(sys.argv[2]))
    else:
        server.run("stdio")
