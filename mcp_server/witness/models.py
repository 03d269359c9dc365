"""The witness's state: for each log origin, the latest checkpoint it cosigned (c2sp.org/tlog-witness:
"For each log, uniquely identified by its origin line, the witness is only required to keep track of
the latest checkpoint it observed and verified").

The table is created by the project's Alembic migration 0005 (exactly these columns). `size` is a
signed 64-bit BIGINT, so the witness records trees of at most 2^63-1 leaves (`MAX_RECORDED_SIZE`).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db import Base

MAX_RECORDED_SIZE = (1 << 63) - 1


class WitnessCheckpoint(Base):
    __tablename__ = "witness_checkpoints"

    origin: Mapped[str] = mapped_column(Text, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    updated_at: Mapped[str] = mapped_column(String(32))
