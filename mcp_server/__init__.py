"""macroslow-mcp: an MCP server for signed MAML workflows."""

__version__ = "0.1.0"
