"""Alembic migrations: the database schema, created and upgraded by `mcp_server.db.migrate`."""
