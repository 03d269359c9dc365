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
  One process at a time is the integrator: the first with a caller waiting takes a session
  advisory lock and keeps it while it lives. A trigger on the queue notifies it (channel
  `macroslow_ledger_queued`) when receipts are queued; it integrates what is queued, from every
  process (up to `batch_max`; with `batch_wait` it waits that long for more once it has some),
  signs one checkpoint per batch, and sends `NOTIFY` on `macroslow_ledger` with the batch (its
  receipts' ids and leaf hashes and the signed checkpoint, when they fit in a notification). Every
  process LISTENs there and answers its own callers from the notification, reading the log only
  when the batch did not fit or a notification was missed. If the integrator dies its transaction
  rolls back and its lock is freed; a process whose callers have waited `RETRY_SECONDS` without a
  notification takes the lock over. Nothing queued is lost or reordered. A caller that has waited
  `OVERDUE_SECONDS` makes its process integrate without the lock (a stuck integrator): the head
  row's lock, which every integration takes, keeps the log in one order whoever integrates.

Each QueuedSequencer also holds a session advisory lock of its own for as long as it lives (its
"writer" lock). An integrator that finds queued receipts whose writer holds no such lock knows that
process has gone and integrates them behind a recovery receipt (`integrate`).
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text
from sqlalchemy.exc import DBAPIError

from mcp_server.db import database_errors, write_transaction
from mcp_server.errors import BackendUnavailable, MacroslowError
from mcp_server.ledger import merkle
from mcp_server.ledger.integrate import Batch, Entry, Evidence, Integrator, StoredCheckpoint
from mcp_server.ledger.models import CheckpointRow, QueuedReceipt, ReceiptRow
from mcp_server.ledger.witnessing import Witnessing, cosigned_note

if TYPE_CHECKING:
    from mcp_server.ledger.receipts import Draft

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.25
LISTEN_SECONDS = 1.0
OVERDUE_SECONDS = 2.0
QUEUED_CHANNEL = "macroslow_ledger_queued"  # a trigger on receipt_queue (migration 0004) notifies it


def _key(name: str) -> int:
    """A positive 31-bit advisory lock key (positive: it reads back from pg_locks unchanged)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


INTEGRATION_LOCK = (_key("macroslow-mcp/ledger/integrator"), 0)
WRITER_NAMESPACE = _key("macroslow-mcp/ledger/writer")


@dataclass(eq=False)
class _Waiter:
    entry: Entry
    since: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    evidence: Evidence | None = None
    error: BaseException | None = None

    def settle(self, evidence: Evidence | None = None, error: BaseException | None = None) -> None:
        self.evidence, self.error = evidence, error
        self.done.set()


class DirectSequencer:
    """Group commit in this process: integrate what waits, one transaction and checkpoint per batch."""

    def __init__(self, engine: Engine, integrator: Integrator, *, batch_max: int) -> None:
        self.witnessing: Witnessing | None = None  # set by the Ledger when witnesses are configured
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
            witnessed(self.witnessing, done)
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
        self.witnessing: Witnessing | None = None  # set by the Ledger when witnesses are configured
        self.engine = engine
        self.integrator = integrator
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.cover_seconds = cover_seconds
        self.writer = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.channel = "macroslow_ledger"
        self._cond = threading.Condition()
        self._waiters: dict[str, _Waiter] = {}
        self._notices: deque[Notice] = deque()
        self._kicked = False
        self._closed = False
        self._started = False
        self._started_leading = False
        self._listener: Any = None  # the psycopg connection that LISTENs and holds the writer lock
        self._leader: Any = None  # while this process integrates: the connection holding the lock
        self._integration: Connection | None = None  # ... and the one its transactions run on
        self._queue_engine: Engine | None = None
        self._threads: list[threading.Thread] = []
        # The log as far as this process has followed it (a checkpoint's size and frontier).
        self._seen: merkle.Frontier | None = None
        self._insert = insert(QueuedReceipt)

    # -- the caller's side -----------------------------------------------------------------------
    def record(self, draft: Draft) -> Evidence:
        self._start()
        assert self._queue_engine is not None
        waiter = _Waiter(Entry.new(draft, self.writer))
        with self._cond:
            self._waiters[waiter.entry.id] = waiter
        try:
            row = {
                "id": waiter.entry.id,
                "created_at": waiter.entry.created_at,
                "writer": self.writer,
                "draft": waiter.entry.draft_json(),
            }
            with database_errors():
                _once_more_if_disconnected(lambda: self._enqueue(row))
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

    def _enqueue(self, row: dict[str, str]) -> None:
        assert self._queue_engine is not None
        with self._queue_engine.connect() as conn:  # autocommit, no flush wait
            conn.execute(self._insert, row)

    def cover(self) -> None:
        """Integrate what is queued now (waiting for the lock), and what is stored but uncovered."""
        with database_errors():
            while self._integrate() is not None:
                pass

    def _kick(self, notice: Notice | None = None) -> None:
        with self._cond:
            if notice is not None:
                self._notices.append(notice)
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
            self._queue_engine = _queue_engine(self.engine)
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
        if self._integration is not None:
            self._integration.close()
        if self._leader is not None:
            self._leader.close()  # the integration lock goes with it
        if self._queue_engine is not None:
            self._queue_engine.dispose()

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
                    self._kick(Notice.parse(notice.payload))
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

    # -- the worker thread: follow the log, integrate when it can, answer this process's callers -----
    def _work(self) -> None:
        while True:
            with self._cond:
                timed_out = False
                while not self._closed and not self._kicked:
                    busy = self._waiters or self._leader is not None
                    if not self._cond.wait(RETRY_SECONDS if busy else None) and self._waiters:
                        timed_out = True  # no notification came: read the log, try to lead
                        break
                if self._closed:
                    return
                self._kicked = False
                notices = list(self._notices)
                self._notices.clear()
            try:
                for notice in notices:
                    self._follow(notice)
                if timed_out:
                    self._catch_up()
                if self._leader is None and (timed_out or not self._started_leading) and self._pending():
                    self._lead()
                if self._leader is not None or (timed_out and self._overdue()):
                    while (batch := self._integrate(own_connection=self._leader is not None)) is not None:
                        self._publish(batch)
            except MacroslowError as exc:
                log.warning("ledger integration failed: %s", exc)
                self._fail_pending(exc)
            except Exception as exc:  # never let the worker die silently
                log.exception("ledger worker failed")
                self._fail_pending(BackendUnavailable(f"the ledger failed ({type(exc).__name__})"))

    def _lead(self) -> None:
        """Become the integrator if no process is: take the integration lock on a connection of
        its own, held while this process lives."""
        import psycopg

        self._started_leading = True
        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise BackendUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
        a, b = INTEGRATION_LOCK
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (a, b)).fetchone()
        if row is None or not row[0]:
            conn.close()
            return
        conn.execute(f"LISTEN {QUEUED_CHANNEL}")  # only the integrator hears of queued receipts
        self._leader = conn
        thread = threading.Thread(
            target=self._hear_queued, args=(conn,), name="ledger-integrator", daemon=True
        )
        thread.start()
        self._threads.append(thread)
        log.info("this process integrates the receipts ledger")

    def _hear_queued(self, conn: Any) -> None:
        """The integrator's ears: each transaction that queued receipts wakes the worker."""
        import psycopg

        try:
            while not self._closed:
                for _ in conn.notifies(timeout=LISTEN_SECONDS, stop_after=1):
                    self._kick()
        except (psycopg.Error, OSError) as exc:
            if not self._closed:  # the lock went with the connection: another process may lead
                log.warning("this process stopped integrating the ledger (%s)", type(exc).__name__)
                with self._cond:
                    self._leader = None
                    self._started_leading = False
                conn.close()

    def _overdue(self) -> bool:
        """A caller here has waited longer than OVERDUE_SECONDS: integrate without the lock (the head
        row's lock keeps integrations in one order), in case the integrator is stuck."""
        with self._cond:
            oldest = min((w.since for w in self._waiters.values()), default=None)
        return oldest is not None and time.monotonic() - oldest > OVERDUE_SECONDS

    def _pending(self) -> bool:
        with self._cond:
            return bool(self._waiters)

    def _fail_pending(self, exc: MacroslowError) -> None:
        with self._cond:
            waiters, self._waiters = list(self._waiters.values()), {}
        for waiter in waiters:
            waiter.settle(error=exc)

    def _integrate(self, *, own_connection: bool = False) -> Batch | None:
        """Integrate one batch of what is queued; the batch, or None if there was nothing to cover.
        Integrations are serialised by the head row's lock (`Integrator.integrate` reads it FOR
        UPDATE), whoever runs them."""
        if not own_connection:  # recovery, or an overdue caller: a pooled connection
            with database_errors(), write_transaction(self.engine) as conn:
                return self._integrate_on(conn)
        # The integrator's worker thread keeps one connection for its transactions (no pool
        # check-out, no ping); only that thread uses it. A connection the server closed (a database
        # restart) is replaced once.
        with database_errors():
            for attempt in (1, 2):
                if self._integration is None or self._integration.invalidated or self._integration.closed:
                    self._integration = self.engine.connect()
                conn = self._integration
                try:
                    with conn.begin():
                        return self._integrate_on(conn)
                except BaseException as exc:
                    conn.close()
                    self._integration = None
                    gone = isinstance(exc, DBAPIError) and exc.connection_invalidated
                    if attempt == 2 or not gone:
                        raise
        return None  # pragma: no cover - the loop returns or raises

    def _integrate_on(self, conn: Connection) -> Batch | None:
        rows = list(conn.execute(_TAKE_QUEUED, {"n": self.batch_max}).all())
        if rows and self.batch_wait and len(rows) < self.batch_max:  # wait for more to batch
            threading.Event().wait(self.batch_wait)
            rows.extend(conn.execute(_TAKE_QUEUED, {"n": self.batch_max - len(rows)}).all())
        rows.sort(key=lambda r: r.entry)
        entries = [Entry.from_row(r) for r in rows]
        batch = self.integrator.integrate(conn, entries, self._gone(conn, {e.writer for e in entries}))
        if batch is None:
            return None  # nothing was queued (the DELETE took nothing) and nothing was uncovered
        strict = self.witnessing is not None and self.witnessing.strict
        # Strict: nobody may answer from this batch before the quorum cosigns (`_publish`).
        payload = Notice.short(batch) if strict else Notice.of(batch)
        conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": self.channel, "p": payload})
        return batch

    def _publish(self, batch: Batch) -> None:
        """Answer this process's callers from the batch it integrated. Strict witnessing: first the
        quorum's cosignatures, then a notification that wakes the other processes to read them."""
        try:
            witnessed(self.witnessing, batch)
        finally:
            if self.witnessing is not None and self.witnessing.strict:
                with database_errors(), self.engine.connect() as conn, conn.begin():
                    conn.execute(
                        text("SELECT pg_notify(:c, :p)"), {"c": self.channel, "p": Notice.short(batch)}
                    )
        self._follow(Notice.from_batch(batch))

    def _gone(self, conn: Any, writers: set[str | None]) -> set[str]:
        """The writers among these that hold no writer lock: their processes have stopped."""
        others = {w for w in writers if w is not None and w != self.writer}
        if not others:
            return set()
        keys = {_key(w): w for w in others}
        held = conn.execute(_HELD_WRITER_LOCKS, {"ns": WRITER_NAMESPACE}).scalars()
        alive = {keys[k] for k in held if k in keys}
        return others - alive

    def _follow(self, notice: Notice) -> None:
        """Extend this process's view of the log by one batch and answer the callers it covers. A
        notice without the batch (too large for a notification), or one that does not continue
        where this process's view ends, is read from the database instead."""
        seen = self._seen
        assert seen is not None  # set by _start
        if notice.end <= seen.size:
            return  # already followed (this process's own batch, then its notification)
        if notice.start != seen.size or notice.ids is None or notice.leaves is None or notice.note is None:
            self._catch_up()
            return
        with self._cond:
            mine = [(at, self._waiters[i]) for at, i in enumerate(notice.ids) if i in self._waiters]
        settled: list[tuple[_Waiter, Evidence]] = []
        if mine:
            proofs = merkle.inclusion_proofs_after(seen, notice.leaves, [notice.start + at for at, _ in mine])
        for leaf in notice.leaves:
            seen.append(leaf)
        if mine:
            checkpoint = StoredCheckpoint(
                notice.end, seen.root(), notice.key_id, notice.note, notice.created_at
            )
            for at, waiter in mine:
                receipt = waiter.entry.receipt(notice.start + at)
                leaf = notice.leaves[at]
                if merkle.leaf_hash(receipt.leaf_bytes()) != leaf:
                    raise MacroslowError(f"receipt {receipt.seq} was integrated unlike it was queued")
                settled.append((waiter, Evidence(receipt, leaf, proofs[receipt.seq], checkpoint)))
        self._settle(settled)

    def _settle(self, settled: list[tuple[_Waiter, Evidence]]) -> None:
        with self._cond:
            for waiter, _ in settled:
                self._waiters.pop(waiter.entry.id, None)
        for waiter, evidence in settled:
            waiter.settle(evidence)

    def _catch_up(self) -> None:
        """Read the checkpoints and leaf hashes this process has not followed; answer its callers."""
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
            notes = {row.size: cosigned_note(conn, row) for row in rows}
        if len(leaves) != rows[-1].size - seen.size:
            raise MacroslowError("the log has a gap below its newest checkpoint; run `receipts verify`")
        base, at = seen.size, 0
        for row in rows:
            span = leaves[at : row.size - base]
            at += len(span)
            note = notes[row.size]
            if self.witnessing is not None and self.witnessing.strict:
                try:
                    self.witnessing.policy.check(note, self.integrator.origin)
                except MacroslowError:
                    return  # not cosigned by the quorum yet: the integrator's notification comes after
            self._follow(
                Notice(
                    start=seen.size,
                    end=row.size,
                    key_id=row.key_id,
                    created_at=row.created_at,
                    ids=[leaf.id for leaf in span],
                    leaves=[bytes(leaf.leaf_hash) for leaf in span],
                    note=note,
                )
            )

    def _initial(self, conn: Any) -> merkle.Frontier:
        """The frontier at the newest checkpoint (rebuilt from the leaves if that checkpoint is older
        than schema 0004 and kept none)."""
        row = conn.execute(select(CheckpointRow).order_by(CheckpointRow.size.desc()).limit(1)).first()
        if row is None:
            return merkle.Frontier()
        return self.integrator._frontier_at(conn, row.size)


# One statement takes the oldest queued receipts (RETURNING gives no order: sorted by the caller).
_TAKE_QUEUED = text(
    "DELETE FROM receipt_queue WHERE entry IN "
    "(SELECT entry FROM receipt_queue ORDER BY entry LIMIT :n) "
    "RETURNING entry, id, created_at, writer, draft"
)
_HELD_WRITER_LOCKS = text(
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND objsubid = 2 AND classid = CAST(:ns AS oid) "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
NOTIFY_LIMIT = 7900  # PostgreSQL refuses payloads of 8000 bytes or more


@dataclass(frozen=True)
class Notice:
    """What an integrator announces: the batch [start, end), and, when it fits in a notification,
    its receipts' ids and leaf hashes and the signed checkpoint, so that the processes waiting for
    those receipts need not read them back. Fields it could not fit are None."""

    start: int
    end: int
    key_id: str = ""
    created_at: str = ""
    ids: list[str] | None = None
    leaves: list[bytes] | None = None
    note: str | None = None

    @classmethod
    def from_batch(cls, batch: Batch) -> Notice:
        cp = batch.checkpoint
        return cls(
            batch.start.size,
            cp.size,
            cp.key_id,
            cp.created_at,
            [r.id for r in batch.receipts],
            list(batch.leaves),
            cp.note,
        )

    @classmethod
    def of(cls, batch: Batch) -> str:
        """The notification payload for a batch: `v1 start end key_id created_at entries note`,
        entries and note in base64 (entries: 16-byte id and 32-byte leaf hash each); `-` for the
        last three when they would not fit."""
        notice = cls.from_batch(batch)
        assert notice.ids is not None and notice.leaves is not None and notice.note is not None
        entries = b"".join(
            uuid.UUID(i).bytes + leaf for i, leaf in zip(notice.ids, notice.leaves, strict=True)
        )
        full = " ".join(
            [
                "v1",
                str(notice.start),
                str(notice.end),
                notice.key_id,
                notice.created_at,
                base64.b64encode(entries).decode("ascii"),
                base64.b64encode(notice.note.encode("utf-8")).decode("ascii"),
            ]
        )
        return full if len(full) <= NOTIFY_LIMIT else f"v1 {notice.start} {notice.end} - - - -"

    @staticmethod
    def short(batch: Batch) -> str:
        """A payload that names the batch only: whoever waits reads it from the database."""
        return f"v1 {batch.start.size} {batch.checkpoint.size} - - - -"

    @classmethod
    def parse(cls, payload: str) -> Notice | None:
        """A notification's notice; None for one this version does not read (then the log is read)."""
        parts = payload.split(" ")
        if len(parts) != 7 or parts[0] != "v1" or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        start, end = int(parts[1]), int(parts[2])
        if parts[5] == "-":
            return cls(start, end)
        try:
            entries = base64.b64decode(parts[5], validate=True)
            note = base64.b64decode(parts[6], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return cls(start, end)
        if len(entries) != 48 * (end - start):
            return cls(start, end)
        chunks = [entries[at : at + 48] for at in range(0, len(entries), 48)]
        ids = [str(uuid.UUID(bytes=chunk[:16])) for chunk in chunks]
        return cls(start, end, parts[3], parts[4], ids, [chunk[16:] for chunk in chunks], note)


def witnessed(witnessing: Witnessing | None, batch: Batch) -> None:
    """Hand the batch's checkpoint to the witnesses: in strict mode wait for the quorum and give the
    batch the cosigned checkpoint (or raise); in the default mode, go on at once."""
    if witnessing is None:
        return
    if witnessing.strict:
        batch.checkpoint = witnessing.cosign(batch.checkpoint)
    else:
        witnessing.offer(batch.checkpoint)


def _once_more_if_disconnected(write: Callable[[], None]) -> None:
    """Run `write`; once more if it failed on a pooled connection the server had closed (the queue
    engine does not ping connections before use: one round trip less per call)."""
    try:
        write()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        write()


def _queue_engine(engine: Engine) -> Engine:
    """Connections for queueing receipts: autocommit, and `synchronous_commit = off` (the
    integrator's commit flushes them; nothing is answered before it)."""
    # Sized for a busy server's worker threads (40 by default): a connection made per call would
    # cost more than the call. Not pinged before use: `_once_more_if_disconnected` retries instead.
    queue = create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_size=20, max_overflow=20)

    @event.listens_for(queue, "connect")
    def _no_flush_wait(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET synchronous_commit TO OFF")
        cursor.close()

    return queue


__all__ = ["Batch", "DirectSequencer", "Notice", "QueuedSequencer"]
