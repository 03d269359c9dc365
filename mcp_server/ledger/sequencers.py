"""How a receipt gets into the log and the call learns that a checkpoint covers it.

A call is answered only once a signed checkpoint covers its receipt (`Ledger.record` returns the
receipt's `Evidence`, or raises): what no checkpoint covers was never acknowledged.

- `DirectSequencer` (SQLite, one machine): callers in this process hand their entries to whichever
  of them goes next; it integrates all that wait (up to `batch_max`) in one write transaction
  (`BEGIN IMMEDIATE`: SQLite's write lock serialises processes on one file), signs one checkpoint
  for the batch, and everyone in it gets their proof. One disk flush and one signature per batch.
- `QueuedSequencer` (PostgreSQL, several processes or replicas): making a receipt durable is one
  short INSERT into `receipt_queue` that takes no log-wide lock, committed without waiting for the
  disk (`synchronous_commit = off`): it is made durable by the integrator's commit, which flushes
  the WAL up to itself and so everything before it, and nothing is answered before that commit.
  Each process runs one worker thread. When it has callers waiting it tries the integration lock
  (`pg_try_advisory_xact_lock`, one holder per database): the holder integrates what is queued, from
  every process (up to `batch_max`, after waiting up to `batch_wait` for more), signs one checkpoint
  and sends `NOTIFY`. Every process LISTENs; on a notification its worker reads the new checkpoints
  and leaf hashes once, and answers its own callers with their proofs. If the holder dies its
  transaction rolls back, the lock is free, and whoever tries next takes over: nothing queued is
  lost or reordered. Waiting is driven by notifications; `RETRY_SECONDS` is only the fallback when
  one cannot come (a holder that died, a lost listener connection).

Each QueuedSequencer also holds a session advisory lock of its own for as long as it lives (its
"writer" lock). An integrator that finds queued receipts whose writer holds no such lock knows that
process has gone and integrates them behind a recovery receipt (`integrate`).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, insert, select, text

from mcp_server.db import database_errors, write_transaction
from mcp_server.errors import BackendUnavailable, MacroslowError
from mcp_server.ledger import merkle
from mcp_server.ledger.integrate import Batch, Entry, Evidence, Integrator, StoredCheckpoint
from mcp_server.ledger.models import CheckpointRow, QueuedReceipt, ReceiptRow

if TYPE_CHECKING:
    from mcp_server.ledger.receipts import Draft

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.25
LISTEN_SECONDS = 1.0


def _key(name: str) -> int:
    """A positive 31-bit advisory lock key (positive: it reads back from pg_locks unchanged)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


INTEGRATION_LOCK = (_key("macroslow-mcp/ledger/integrator"), 0)
WRITER_NAMESPACE = _key("macroslow-mcp/ledger/writer")


@dataclass(eq=False)
class _Waiter:
    entry: Entry
    done: threading.Event = field(default_factory=threading.Event)
    evidence: Evidence | None = None
    error: BaseException | None = None

    def settle(self, evidence: Evidence | None = None, error: BaseException | None = None) -> None:
        self.evidence, self.error = evidence, error
        self.done.set()


class DirectSequencer:
    """Group commit in this process: integrate what waits, one transaction and checkpoint per batch."""

    def __init__(self, engine: Engine, integrator: Integrator, *, batch_max: int) -> None:
        self.engine = engine
        self.integrator = integrator
        self.batch_max = batch_max
        self._cond = threading.Condition()
        self._queue: list[_Waiter] = []
        self._writing = False

    def record(self, draft: Draft) -> Evidence:
        item = _Waiter(Entry.new(draft))
        with self._cond:
            self._queue.append(item)
            while not item.done.is_set():
                if self._writing:
                    self._cond.wait()
                    continue
                self._writing = True
                batch, self._queue = self._queue[: self.batch_max], self._queue[self.batch_max :]
                self._cond.release()
                try:
                    self._commit(batch)
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error
        assert item.evidence is not None
        return item.evidence

    def _commit(self, batch: list[_Waiter]) -> None:
        try:
            with database_errors(), write_transaction(self.engine) as conn:
                done = self.integrator.integrate(conn, [w.entry for w in batch])
            assert done is not None
            evidence = done.evidence()
        except BaseException as exc:
            for waiter in batch:
                waiter.settle(error=exc)
            if not isinstance(exc, Exception):
                raise
            return
        for waiter in batch:
            waiter.settle(evidence[waiter.entry.id])

    def cover(self) -> None:
        """Cover what is stored but uncovered (recovery), now."""
        with database_errors(), write_transaction(self.engine) as conn:
            self.integrator.integrate(conn, [])

    def close(self) -> None:
        pass


class QueuedSequencer:
    """The queue, the integration lock and LISTEN/NOTIFY (PostgreSQL); see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        integrator: Integrator,
        *,
        batch_max: int,
        batch_wait: float,
        cover_seconds: float,
    ) -> None:
        self.engine = engine
        self.integrator = integrator
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.cover_seconds = cover_seconds
        self.writer = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.channel = "macroslow_ledger"
        self._cond = threading.Condition()
        self._waiters: dict[str, _Waiter] = {}
        self._kicked = False
        self._newest = 0  # the largest checkpoint size a notification announced
        self._closed = False
        self._started = False
        self._listener: Any = None  # the psycopg connection that LISTENs and holds the writer lock
        self._threads: list[threading.Thread] = []
        # What this process has seen of the log: the newest checkpoint's size and frontier.
        self._seen: merkle.Frontier | None = None
        self._insert = insert(QueuedReceipt)

    # -- the caller's side -----------------------------------------------------------------------
    def record(self, draft: Draft) -> Evidence:
        self._start()
        waiter = _Waiter(Entry.new(draft, self.writer))
        with self._cond:
            if not self._waiters and self._seen is not None and self._newest > self._seen.size:
                # Nobody here waited while the log grew, so this process did not follow it: start
                # again from the newest checkpoint (its row keeps the frontier), before queueing.
                with database_errors(), self.engine.connect() as conn:
                    self._seen = self._initial(conn)
            self._waiters[waiter.entry.id] = waiter
        try:
            with database_errors(), self.engine.connect() as conn, conn.begin():
                conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
                conn.execute(
                    self._insert,
                    {
                        "id": waiter.entry.id,
                        "created_at": waiter.entry.created_at,
                        "writer": self.writer,
                        "draft": waiter.entry.draft_json(),
                    },
                )
        except BaseException:
            with self._cond:
                self._waiters.pop(waiter.entry.id, None)
            raise
        self._kick()
        if not waiter.done.wait(self.cover_seconds):
            with self._cond:
                self._waiters.pop(waiter.entry.id, None)
            raise BackendUnavailable(
                f"no signed checkpoint covered this call's receipt within {self.cover_seconds:g} s, so its "
                "result is withheld; the receipt stays queued and will be covered"
            )
        if waiter.error is not None:
            raise waiter.error
        assert waiter.evidence is not None
        return waiter.evidence

    def cover(self) -> None:
        """Integrate what is queued now (waiting for the lock), and what is stored but uncovered."""
        with database_errors():
            while self._integrate(wait=True) is not None:
                pass

    def _kick(self, size: int | None = None) -> None:
        with self._cond:
            if size is not None:
                self._newest = max(self._newest, size)
            self._kicked = True
            self._cond.notify_all()

    # -- start and stop ----------------------------------------------------------------------------
    def _start(self) -> None:
        if self._started:
            return
        with self._cond:
            if self._started:
                return
            if self._closed:
                raise BackendUnavailable("the ledger is closed")
            self._connect_listener()  # the writer lock is held before the first receipt is queued
            with database_errors(), self.engine.connect() as conn:
                self._seen = self._initial(conn)  # before the first receipt: it must lie beyond
            for target in (self._listen, self._work):
                thread = threading.Thread(target=target, name=f"ledger-{target.__name__[1:]}", daemon=True)
                thread.start()
                self._threads.append(thread)
            self._started = True

    def _connect_listener(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with database_errors():
            try:
                conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                raise BackendUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (WRITER_NAMESPACE, _key(self.writer)))
        conn.execute(f"LISTEN {self.channel}")
        self._listener = conn

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            waiters, self._waiters = list(self._waiters.values()), {}
        for waiter in waiters:
            waiter.settle(error=BackendUnavailable("the ledger closed before the receipt was covered"))
        for thread in self._threads:
            thread.join(timeout=LISTEN_SECONDS + 1)
        if self._listener is not None:
            self._listener.close()

    # -- the listener thread: notifications wake the worker ---------------------------------------
    def _listen(self) -> None:
        import psycopg

        failures = 0
        while not self._closed:
            try:
                if self._listener is None or self._listener.closed:
                    self._connect_listener()
                    self._kick()  # notifications may have been missed meanwhile
                for notice in self._listener.notifies(timeout=LISTEN_SECONDS, stop_after=1):
                    self._kick(int(notice.payload) if notice.payload.isdigit() else None)
                failures = 0
            except (psycopg.Error, MacroslowError, OSError) as exc:
                if self._closed:
                    return
                failures += 1
                if failures == 1:
                    log.warning("ledger notifications lost (%s); reconnecting", type(exc).__name__)
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                with self._cond:
                    self._cond.wait(min(5.0, 0.1 * 2**failures))

    # -- the worker thread: integrate when it can, answer this process's callers --------------------
    # It reads the log only while callers here wait; a process that was idle while others wrote
    # starts again from the newest checkpoint's stored frontier (in `record`).
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._kicked:
                    if not self._cond.wait(RETRY_SECONDS if self._waiters else None) and self._waiters:
                        break  # no notification came: try the lock again
                if self._closed:
                    return
                self._kicked = False
                if not self._waiters:
                    continue  # nobody here waits: the log is read again when somebody does
            try:
                self._catch_up()
                if self._pending():
                    batch = self._integrate(wait=False)
                    if batch is not None:
                        self._take(batch)
            except MacroslowError as exc:
                log.warning("ledger integration failed: %s", exc)
                self._fail_pending(exc)
            except Exception as exc:  # never let the worker die silently
                log.exception("ledger worker failed")
                self._fail_pending(BackendUnavailable(f"the ledger failed ({type(exc).__name__})"))

    def _pending(self) -> bool:
        with self._cond:
            return bool(self._waiters)

    def _fail_pending(self, exc: MacroslowError) -> None:
        with self._cond:
            waiters, self._waiters = list(self._waiters.values()), {}
        for waiter in waiters:
            waiter.settle(error=exc)

    def _integrate(self, *, wait: bool) -> Batch | None:
        """Integrate one batch if this process gets the lock; the batch, if it integrated one."""
        with database_errors(), write_transaction(self.engine) as conn:
            lock = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
            a, b = INTEGRATION_LOCK
            got = conn.execute(text(f"SELECT {lock}(:a, :b)"), {"a": a, "b": b}).scalar()
            if not wait and not got:
                return None
            if self.batch_wait:
                threading.Event().wait(self.batch_wait)
            rows = conn.execute(
                select(QueuedReceipt).order_by(QueuedReceipt.entry).limit(self.batch_max)
            ).all()
            entries = [Entry.from_row(r) for r in rows]
            batch = self.integrator.integrate(conn, entries, self._gone(conn, {e.writer for e in entries}))
            if batch is None:
                return None
            if rows:
                conn.execute(delete(QueuedReceipt).where(QueuedReceipt.entry.in_([r.entry for r in rows])))
            size = str(batch.checkpoint.size)
            conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": self.channel, "p": size})
        return batch

    def _gone(self, conn: Any, writers: set[str | None]) -> set[str]:
        """The writers among these that hold no writer lock: their processes have stopped."""
        others = {w for w in writers if w is not None and w != self.writer}
        if not others:
            return set()
        keys = {_key(w): w for w in others}
        held = conn.execute(
            text(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objsubid = 2 AND classid = CAST(:ns AS oid) "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"ns": WRITER_NAMESPACE},
        ).scalars()
        alive = {keys[k] for k in held if k in keys}
        return others - alive

    def _take(self, batch: Batch) -> None:
        """Answer this process's callers from the batch it just integrated, without reading it back
        (when this process had seen the log up to where the batch starts; else `_catch_up` will)."""
        seen = self._seen
        assert seen is not None
        if seen.size != batch.start.size:
            self._catch_up()
            return
        with self._cond:
            evidence = batch.evidence(set(self._waiters))
            settled = [(w, evidence[i]) for i, w in list(self._waiters.items()) if i in evidence]
            for waiter, _ in settled:
                del self._waiters[waiter.entry.id]
        for leaf in batch.leaves:
            seen.append(leaf)
        for waiter, found in settled:
            waiter.settle(found)

    def _catch_up(self) -> None:
        """Read the checkpoints and leaf hashes this process has not seen; answer its callers."""
        with database_errors(), self.engine.connect() as conn:
            seen = self._seen
            assert seen is not None  # set by _start
            rows = conn.execute(
                select(CheckpointRow).where(CheckpointRow.size > seen.size).order_by(CheckpointRow.size)
            ).all()
            if not rows:
                return
            leaves = conn.execute(
                select(ReceiptRow.id, ReceiptRow.seq, ReceiptRow.leaf_hash)
                .where(ReceiptRow.seq >= seen.size, ReceiptRow.seq < rows[-1].size)
                .order_by(ReceiptRow.seq)
            ).all()
        if len(leaves) != rows[-1].size - seen.size:
            raise MacroslowError("the log has a gap below its newest checkpoint; run `receipts verify`")
        with self._cond:
            waiters = dict(self._waiters)
        settled: list[tuple[_Waiter, Evidence]] = []
        base, at = seen.size, 0
        for row in rows:
            checkpoint = StoredCheckpoint(row.size, row.root, row.key_id, row.note, row.created_at)
            span = leaves[at : row.size - base]
            hashes = [bytes(leaf.leaf_hash) for leaf in span]
            mine = [(leaf, waiters[leaf.id]) for leaf in span if leaf.id in waiters]
            proofs = merkle.inclusion_proofs_after(seen, hashes, [leaf.seq for leaf, _ in mine])
            for leaf, waiter in mine:
                receipt = waiter.entry.receipt(leaf.seq)
                if merkle.leaf_hash(receipt.leaf_bytes()) != bytes(leaf.leaf_hash):
                    raise MacroslowError(f"receipt {leaf.seq} was stored unlike it was queued")
                evidence = Evidence(receipt, bytes(leaf.leaf_hash), proofs[leaf.seq], checkpoint)
                settled.append((waiter, evidence))
            for leaf_hash in hashes:
                seen.append(leaf_hash)
            at += len(span)
        with self._cond:
            for waiter, _ in settled:
                self._waiters.pop(waiter.entry.id, None)
        for waiter, evidence in settled:
            waiter.settle(evidence)

    def _initial(self, conn: Any) -> merkle.Frontier:
        """The frontier at the newest checkpoint (rebuilt from the leaves if that checkpoint is older
        than schema 0004 and kept none)."""
        row = conn.execute(select(CheckpointRow).order_by(CheckpointRow.size.desc()).limit(1)).first()
        if row is None:
            return merkle.Frontier()
        return self.integrator._frontier_at(conn, row.size)


__all__ = ["Batch", "DirectSequencer", "QueuedSequencer"]
