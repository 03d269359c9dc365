"""The response cache: answers to identical requests, kept in the database for a TTL.

A row is the request's digest (`ChatRequest.cache_key`: principal, backend, model, messages,
parameters), when it was stored and expires, and the answer (`Completion.to_json`: text, model,
usage, finish reason, request id). Neither the prompt nor any credential is stored. Every server
process sharing the database shares the cache; expired rows are ignored, and deleted by a later
write (at most once a minute per process).
"""

from __future__ import annotations

import json
import time

from sqlalchemy import Connection, Engine, Float, String, Text, bindparam, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db import Base, transaction
from mcp_server.llm.chat import Completion
from mcp_server.policy.quota import _insert as dialect_insert

PURGE_EVERY_SECONDS = 60.0  # expired rows are deleted by a write at most this often (per process)


class LlmCacheEntry(Base):
    __tablename__ = "llm_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    response: Mapped[str] = mapped_column(Text)


class ResponseCache:
    def __init__(self, engine: Engine, ttl_seconds: int) -> None:
        self.engine = engine
        self.ttl = ttl_seconds
        self._next_purge = 0.0
        self._get = select(LlmCacheEntry.response, LlmCacheEntry.expires_at).where(
            LlmCacheEntry.key == bindparam("key", type_=String)
        )
        insert = dialect_insert(engine)(LlmCacheEntry)
        self._put = insert.on_conflict_do_update(
            index_elements=[LlmCacheEntry.key],
            set_={
                "created_at": insert.excluded.created_at,
                "expires_at": insert.excluded.expires_at,
                "response": insert.excluded.response,
            },
        )

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(
        self, key: str, now: float | None = None, *, connection: Connection | None = None
    ) -> Completion | None:
        now = time.time() if now is None else now
        with transaction(self.engine, connection) as conn:
            row = conn.execute(self._get, {"key": key}).first()
        if row is None or row.expires_at <= now:
            return None
        return Completion.from_json(json.loads(row.response))

    def put(
        self,
        key: str,
        completion: Completion,
        now: float | None = None,
        *,
        connection: Connection | None = None,
    ) -> None:
        now = time.time() if now is None else now
        entry = {
            "key": key,
            "created_at": now,
            "expires_at": now + self.ttl,
            "response": json.dumps(completion.to_json(), separators=(",", ":")),
        }
        with transaction(self.engine, connection) as conn:
            if now >= self._next_purge:
                conn.execute(delete(LlmCacheEntry).where(LlmCacheEntry.expires_at <= now))
                self._next_purge = now + PURGE_EVERY_SECONDS
            conn.execute(self._put, entry)
