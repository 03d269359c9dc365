"""The log's side of witnessing (c2sp.org/tlog-witness): each new checkpoint goes to the witnesses of
the policy, with a consistency proof from the size each last cosigned, and their cosignatures are
kept with the checkpoint (`checkpoint_cosignatures`).

- Default mode (`MACROSLOW_WITNESS_MODE=async`): the integrator hands the newest checkpoint to a
  background thread and goes on; callers are answered as soon as the log's own signature covers
  their receipt, and their proof carries the checkpoint as the log signed it. A witness that is
  down or slow delays nothing.
- Strict mode (`strict`): the integrator submits before it answers anyone, and answers only when the
  policy's quorum has cosigned; the proof then carries the cosigned checkpoint. A quorum not reached
  within `MACROSLOW_WITNESS_TIMEOUT_SECONDS` fails the calls of that batch with
  `backend_unavailable` (their receipts stay in the log, covered by the log's signature).

The proof sent to a witness is made from the frontier stored with the checkpoint at the witness's
size and the leaf hashes since (`merkle.consistency_proof_after`): no read of the whole log. A 409
names the size the witness has; the proof is remade from there, once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from mcp_server.db import database_errors
from mcp_server.errors import BackendUnavailable, MacroslowError
from mcp_server.ledger import merkle
from mcp_server.ledger.integrate import StoredCheckpoint, utc_now
from mcp_server.ledger.models import CosignatureRow, ReceiptRow

if TYPE_CHECKING:
    from mcp_server.witness.policy import Policy

log = logging.getLogger(__name__)


@dataclass
class _Witness:
    name: str  # the policy's name for it
    key_name: str  # the cosigner name on its signature lines
    url: str
    last_size: int | None = None  # the size it last cosigned, as far as this process knows
    failing: bool = False
    client: Any = None  # one keep-alive HTTP client per witness (making one costs milliseconds)


class Witnessing:
    def __init__(
        self,
        engine: Engine,
        policy: Policy,
        origin: str,
        frontier_at: Callable[[Connection, int], merkle.Frontier],
        *,
        timeout: float,
        strict: bool,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.origin = origin
        self.frontier_at = frontier_at
        self.timeout = timeout
        self.strict = strict
        self.witnesses = [_Witness(w.name, w.key_name, w.url) for w in policy.witnesses if w.url]
        self._pool = ThreadPoolExecutor(max(1, len(self.witnesses)), thread_name_prefix="witness")
        self._cond = threading.Condition()
        self._newest: StoredCheckpoint | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- strict: submit now -------------------------------------------------------------------------
    def cosign(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        """Submit to every witness, keep their cosignatures, and return the checkpoint with them;
        BackendUnavailable when the policy's quorum is not met."""
        lines = self._submit(checkpoint)
        cosigned = replace(checkpoint, note=checkpoint.note + "".join(lines))
        try:
            self.policy.check(cosigned.note, self.origin)
        except MacroslowError as exc:
            raise BackendUnavailable(
                f"the witness quorum did not cosign checkpoint {checkpoint.size} ({exc.message}); the "
                "result is withheld (MACROSLOW_WITNESS_MODE=strict)"
            ) from exc
        return cosigned

    # -- async: a background thread submits the newest checkpoint ------------------------------------
    def offer(self, checkpoint: StoredCheckpoint) -> None:
        with self._cond:
            if self._newest is None or checkpoint.size > self._newest.size:
                self._newest = checkpoint
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="witness-submitter", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._newest is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                checkpoint, self._newest = self._newest, None
            assert checkpoint is not None
            try:
                self._submit(checkpoint)
            except Exception:  # never let the submitter die
                log.exception("submitting checkpoint %d to witnesses failed", checkpoint.size)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for witness in self.witnesses:
            if witness.client is not None:
                witness.client.close()

    # -- submitting -----------------------------------------------------------------------------------
    def _submit(self, checkpoint: StoredCheckpoint) -> list[str]:
        futures = [self._pool.submit(self._one, w, checkpoint) for w in self.witnesses]
        lines = []
        for future in futures:
            try:
                line = future.result(timeout=self.timeout + 1)
            except Exception as exc:  # a witness's failure is logged in _one; this is a timeout
                log.warning("witness did not answer in time: %s", type(exc).__name__)
                continue
            if line is not None:
                lines.append(line)
        return lines

    def _one(self, witness: _Witness, checkpoint: StoredCheckpoint) -> str | None:
        from mcp_server.witness.client import add_checkpoint
        from mcp_server.witness.errors import WitnessConflict, WitnessRefused

        for _ in range(2):
            old = witness.last_size or 0
            if old >= checkpoint.size:
                return None  # it has cosigned this size (or a larger one) already
            try:
                proof = self._consistency(old, checkpoint.size)
                if witness.client is None:
                    import httpx2

                    witness.client = httpx2.Client(timeout=self.timeout, follow_redirects=False)
                answer = add_checkpoint(
                    witness.url, old, proof, checkpoint.note, timeout=self.timeout, client=witness.client
                )
            except WitnessConflict as conflict:
                witness.last_size = conflict.size
                continue
            except WitnessRefused as exc:
                self._failed(witness, f"refused checkpoint {checkpoint.size}: {exc.message}", error=True)
                return None
            except MacroslowError as exc:
                self._failed(witness, f"unavailable ({exc.message})")
                return None
            witness.last_size = checkpoint.size
            if witness.failing:
                log.info("witness %s cosigns again", witness.name)
                witness.failing = False
            line = next((x for x in answer if x.startswith(f"\u2014 {witness.key_name} ")), None)
            if line is None:
                self._failed(witness, "answered without a cosignature by its name", error=True)
                return None
            line = line if line.endswith("\n") else line + "\n"
            self._store(checkpoint.size, witness.name, line)
            return line
        self._failed(witness, "answered 409 twice")
        return None

    def _failed(self, witness: _Witness, what: str, *, error: bool = False) -> None:
        if not witness.failing or error:
            (log.error if error else log.warning)("witness %s %s", witness.name, what)
        witness.failing = True

    def _consistency(self, old: int, new: int) -> list[bytes]:
        with database_errors(), self.engine.connect() as conn:
            frontier = self.frontier_at(conn, old) if old else merkle.Frontier()
            leaves = conn.execute(
                select(ReceiptRow.leaf_hash)
                .where(ReceiptRow.seq >= old, ReceiptRow.seq < new)
                .order_by(ReceiptRow.seq)
            ).scalars()
            tail = [bytes(leaf) for leaf in leaves]
        if len(tail) != new - old:
            raise BackendUnavailable(f"the log has {len(tail)} receipts between {old} and {new}")
        return merkle.consistency_proof_after(frontier, tail)

    def _store(self, size: int, witness: str, line: str) -> None:
        try:
            with database_errors(), self.engine.begin() as conn:
                conn.execute(
                    insert(CosignatureRow).values(size=size, witness=witness, line=line, created_at=utc_now())
                )
        except MacroslowError as exc:
            if not isinstance(exc.__cause__, IntegrityError):  # kept already (another process)
                log.warning("cosignature of %s for checkpoint %d not kept: %s", witness, size, exc)


def cosigned_note(conn: Connection, checkpoint: Any) -> str:
    """A stored checkpoint's note with the witnesses' cosignature lines kept for it."""
    lines = conn.execute(
        select(CosignatureRow.line)
        .where(CosignatureRow.size == checkpoint.size)
        .order_by(CosignatureRow.witness)
    ).scalars()
    return str(checkpoint.note) + "".join(lines)
