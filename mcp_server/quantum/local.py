"""The local simulator: qiskit-aer in worker processes.

Why processes: a run cannot be interrupted inside Aer, but a process can be stopped, so `cancel_job`
and the job timeout really stop the work (and free its memory); a run that exhausts memory takes
down its worker, not the server; and the server's event loop never waits on a simulation.

- `plan(qubits, gate_counts)` picks the method before anything runs: Aer's automatic choice
  (statevector, or stabilizer for Clifford circuits) when a statevector of that width fits the
  memory budget (16 bytes x 2^n, `quantum_memory_mb`, default half of the memory available at
  start); wider Clifford circuits on the stabilizer method; other wider circuits on the
  matrix-product-state method, which is exact and fast for circuits with little entanglement and
  slow for circuits with much. Over the server's `max_qubits` (the policy checks it) or the method's
  own width -> `RequestTooLarge` with the numbers and the reason.
- `run(submission, method, handle)` (blocking; the job service calls it from the job's thread) waits
  for a free worker (at most `quantum_workers` run at once, at most `quantum_max_queued` wait), sends
  it the circuit and waits for the counts. `handle.cancel()` (cancel_job, the job timeout, shutdown)
  kills the worker; a fresh one is started when next needed.

Workers start lazily (the first local job pays for importing qiskit-aer, about a second) and keep a
pass manager per method, so later runs only transpile and simulate. The circuit travels pickled, and
each worker keeps the last `TRANSPILED_CACHE` circuits it transpiled (of pickles up to
`TRANSPILED_MAX_BYTES`) keyed by the SHA-256 of those exact bytes, the method and the bond
dimension: a circuit run again skips unpickling and transpiling, and a key never names another circuit.
"""

from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mcp_server.errors import BackendUnavailable, RateLimited, RequestTooLarge
from mcp_server.metrics import QUANTUM_QUEUE
from mcp_server.quantum.backends import Outcome, Submission

log = logging.getLogger(__name__)

BYTES_PER_AMPLITUDE = 16  # complex128
RUNNING_AFTER = 0.05  # seconds: a run still going after this is recorded as running
TRANSPILED_CACHE = 32  # transpiled circuits a worker keeps
TRANSPILED_MAX_BYTES = 256 * 1024  # larger pickled circuits are transpiled every time
STABILIZER_MAX_QUBITS = 10_000  # Aer's stabilizer method's own bound
MPS_MAX_QUBITS = 63  # Aer's matrix-product-state method's own bound (64-bit basis states)
CLIFFORD_GATES = frozenset(
    {"h", "s", "sdg", "x", "y", "z", "cx", "cy", "cz", "swap", "id", "sx", "sxdg", "measure", "barrier",
     "reset", "delay"}
)  # fmt: skip


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


@dataclass(frozen=True)
class Plan:
    method: str  # what Aer is asked for: automatic | stabilizer | matrix_product_state
    why: str


class Planner:
    """Chooses the simulation method for a circuit from its width, gates and the memory budget."""

    def __init__(self, memory_bytes: int, max_qubits: int) -> None:
        self.memory_bytes = memory_bytes
        self.max_qubits = max_qubits
        self.statevector_qubits = max(1, int(math.log2(max(memory_bytes, 32) / BYTES_PER_AMPLITUDE)))

    def plan(self, qubits: int, gate_counts: dict[str, int]) -> Plan:
        if qubits > self.max_qubits:
            raise RequestTooLarge(
                "qubits over this server's limit (MACROSLOW_MAX_QUBITS)",
                requested=qubits,
                allowed=self.max_qubits,
            )
        if qubits <= self.statevector_qubits:
            return Plan("automatic", f"a statevector of {qubits} qubits fits the memory budget")
        if set(gate_counts) <= CLIFFORD_GATES:
            if qubits > STABILIZER_MAX_QUBITS:
                raise RequestTooLarge(
                    "qubits over what the stabilizer simulator holds",
                    requested=qubits,
                    allowed=STABILIZER_MAX_QUBITS,
                )
            return Plan("stabilizer", "Clifford circuit wider than the statevector budget")
        if qubits > MPS_MAX_QUBITS:
            raise RequestTooLarge(
                f"qubits over what the local simulator holds for a non-Clifford circuit: a statevector "
                f"fits {self.statevector_qubits} qubits in the memory budget "
                f"({self.memory_bytes // 2**20} MiB) and the matrix-product-state method {MPS_MAX_QUBITS}",
                requested=qubits,
                allowed=MPS_MAX_QUBITS,
            )
        return Plan(
            "matrix_product_state",
            f"{qubits} qubits exceed the statevector budget ({self.statevector_qubits} qubits in "
            f"{self.memory_bytes // 2**20} MiB); exact, fast when entanglement is low",
        )


# -- the worker process -------------------------------------------------------------------------


def _worker_main(conn: Connection) -> None:  # pragma: no cover - runs in the child process
    """Serve runs until the pipe closes. stdout is pointed at stderr first: over stdio the server's
    stdout carries JSON-RPC only, and this process inherited it. A watchdog thread ends the worker
    when its server dies (even by SIGKILL), so no simulation outlives the server."""
    os.dup2(2, 1)
    _die_with_parent()
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_aer import AerSimulator

    cache: dict[tuple[str, int | None], tuple[Any, Any]] = {}
    transpiled: dict[tuple[bytes, str, int | None], Any] = {}  # insertion order: oldest first
    conn.send(("ready", os.getpid()))
    while True:
        try:
            payload, shots, seed, method, bond = conn.recv()
        except (EOFError, OSError):
            return
        try:
            key = (method, bond)
            if key not in cache:
                options: dict[str, Any] = {"method": method}
                if method == "matrix_product_state" and bond is not None:
                    options["matrix_product_state_max_bond_dimension"] = bond
                sim = AerSimulator(**options)
                cache[key] = (sim, generate_preset_pass_manager(optimization_level=1, backend=sim))
            sim, pm = cache[key]
            started = time.perf_counter()
            circuit_key = (hashlib.sha256(payload).digest(), method, bond)
            ready = transpiled.pop(circuit_key, None)
            if ready is None:
                ready = pm.run(pickle.loads(payload))  # noqa: S301 - the server's own pipe, as conn.recv()
            if len(payload) <= TRANSPILED_MAX_BYTES:
                transpiled[circuit_key] = ready  # (re)inserted last: the most recently used
                while len(transpiled) > TRANSPILED_CACHE:
                    del transpiled[next(iter(transpiled))]
            result = sim.run(ready, shots=shots, seed_simulator=seed).result()
            elapsed = time.perf_counter() - started
            if not result.success:
                conn.send(("error", "backend_unavailable", f"the simulator failed: {result.status}"))
                continue
            data = result.results[0]
            counts = {str(k): int(v) for k, v in result.get_counts().items()}
            conn.send(
                (
                    "ok",
                    {
                        "counts": counts,
                        "method": data.metadata.get("method", method),
                        "seconds": elapsed,
                        "simulator_seconds": float(getattr(data, "time_taken", 0.0) or 0.0),
                    },
                )
            )
        except MemoryError:
            conn.send(("error", "request_too_large", "the simulation ran out of memory"))
        except Exception as exc:  # the seam: a circuit the simulator cannot run
            conn.send(("error", "backend_unavailable", f"the simulator could not run the circuit: {exc}"))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child process
    """End the worker when the server process is gone (the worker is re-parented).

    Not PR_SET_PDEATHSIG: that fires when the *thread* that started the worker ends, and workers are
    started from job threads. Not a thread in the worker either: some Aer simulation methods hold
    the GIL for the whole run, so a watching thread could not run until the simulation ended (an
    orphaned worker kept two cores busy for minutes). The watcher is a small process forked before
    qiskit is loaded, with a GIL of its own: it kills the worker with SIGKILL once the worker's
    parent is no longer the server, and exits once the worker is gone."""
    server, worker = os.getppid(), os.getpid()
    if not os.path.exists(f"/proc/{worker}/stat"):  # no /proc: watch from a thread, as best we can

        def watch() -> None:
            while os.getppid() == server:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, name="macroslow-aer-watchdog", daemon=True).start()
        return
    if os.fork() != 0:
        return
    try:  # the watcher process
        while os.getppid() == worker:  # else the worker has ended: nothing left to watch
            if _parent_of(worker) != server:
                os.kill(worker, signal.SIGKILL)
                break
            time.sleep(0.5)
    finally:
        os._exit(0)


def _parent_of(pid: int) -> int | None:  # pragma: no cover - runs in the watcher process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, then the parent's pid


class _Worker:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child,), name="macroslow-aer", daemon=True)
        self.process.start()
        child.close()
        self._kill_lock = threading.Lock()

    def kill(self) -> None:
        """Stop the process (idempotent, from any thread). The pipe is not closed here: another
        thread may be waiting on it (it sees end-of-file); it closes when the worker is dropped."""
        with self._kill_lock:  # one waitpid at a time
            if self.process.is_alive():
                self.process.kill()
            self.process.join(timeout=5)


class Cancelled(Exception):
    """The run was cancelled (or timed out) and its worker stopped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunHandle:
    """One local run, shared between the thread running it and whoever cancels it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self.cancelled: str | None = None  # the reason, once cancelled

    def attach(self, worker: _Worker | None) -> None:
        with self._lock:
            self._worker = worker
            if worker is not None and self.cancelled is not None:
                worker.kill()

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the run: before it starts, it never starts; while it runs, its worker is killed."""
        with self._lock:
            if self.cancelled is None:
                self.cancelled = reason
            if self._worker is not None:
                self._worker.kill()


class LocalSimulator:
    """A bounded pool of Aer worker processes, driven from ordinary threads (one per running job)."""

    name = "local"

    def __init__(
        self,
        *,
        workers: int,
        max_queued: int,
        memory_bytes: int,
        max_qubits: int,
        timeout: float,
        mps_max_bond: int | None = None,
    ) -> None:
        self.planner = Planner(memory_bytes, max_qubits)
        self.workers = workers
        self.max_queued = max_queued
        self.timeout = timeout
        self.mps_max_bond = mps_max_bond
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._waiting = 0
        self._closed = False

    @property
    def queued(self) -> int:
        return self._waiting

    def admit(self) -> None:
        """Take a place in the queue for a new job, or refuse it when the queue is full. Every
        admitted job must then `run` (which gives the place up) or be `withdrawn`."""
        with self._lock:
            if self._waiting >= self.max_queued:
                raise RateLimited(
                    f"the local simulator has {self._waiting} jobs waiting for a worker "
                    "(MACROSLOW_QUANTUM_MAX_QUEUED); try again shortly",
                    retry_after=5.0,
                )
            self._waiting += 1
            QUANTUM_QUEUE.inc()

    def withdraw(self) -> None:
        with self._lock:
            self._waiting -= 1
            QUANTUM_QUEUE.dec()

    def run(
        self,
        submission: Submission,
        method: str,
        handle: RunHandle,
        on_start: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run one circuit in a worker process and return its counts (blocking: call it from a
        thread) after `admit`. Raises `Cancelled` when `handle.cancel()` was called or the timeout passed."""
        try:  # the job was admitted: it holds a place in the queue until it gets a worker
            while not self._slots.acquire(timeout=0.1):
                if handle.cancelled is not None or self._closed:
                    raise Cancelled(handle.cancelled or "the server is stopping")
        finally:
            with self._lock:
                self._waiting -= 1
                QUANTUM_QUEUE.dec()
        try:
            if handle.cancelled is not None:
                raise Cancelled(handle.cancelled)
            worker = self._take_worker()
            handle.attach(worker)
            try:
                outcome = self._exchange(worker, submission, method, handle, on_start)
            except BaseException:
                self._discard(worker)  # mid-run: the worker may still be simulating
                raise
            finally:
                handle.attach(None)
            with self._lock:
                if self._closed:
                    self._discard(worker)
                else:
                    self._idle.append(worker)
            return outcome
        finally:
            self._slots.release()

    def _exchange(
        self,
        worker: _Worker,
        submission: Submission,
        method: str,
        handle: RunHandle,
        on_start: Callable[[], None] | None,
    ) -> Outcome:
        bond = self.mps_max_bond if method == "matrix_product_state" else None
        deadline = time.monotonic() + self.timeout
        try:
            payload = pickle.dumps(submission.circuit, protocol=pickle.HIGHEST_PROTOCOL)
            worker.conn.send((payload, submission.shots, submission.seed, method, bond))
            # A run that ends within RUNNING_AFTER is never recorded as running (one database write
            # less for small circuits); a longer one is, while the worker simulates.
            if on_start is not None and not worker.conn.poll(RUNNING_AFTER):
                on_start()
            while not worker.conn.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    handle.cancel(f"timed out after {self.timeout:g} s (the job timeout)")
                    raise Cancelled(handle.cancelled or "timed out")
            reply = worker.conn.recv()
        except (EOFError, OSError) as exc:
            if handle.cancelled is not None:
                raise Cancelled(handle.cancelled) from None
            if self._closed:
                raise Cancelled("the server is stopping") from None
            raise BackendUnavailable("the local simulator's worker process ended during the run") from exc
        if reply[0] == "ok":
            data = reply[1]
            return Outcome(
                counts=data["counts"],
                method=data["method"],
                seconds=data["seconds"],
                details={"simulator_seconds": data["simulator_seconds"]},
            )
        _, code, message = reply
        if code == "request_too_large":
            raise RequestTooLarge(message, requested=submission.circuit.num_qubits, allowed=0)
        raise BackendUnavailable(message)

    def _take_worker(self) -> _Worker:
        with self._lock:
            if self._closed:  # a worker started now would never be stopped
                raise Cancelled("the server is stopping")
            while self._idle:
                worker = self._idle.pop()
                if worker.process.is_alive():
                    return worker
                self._discard(worker)
            worker = _Worker()
            self._all.add(worker)
        try:
            if not worker.conn.poll(120):
                raise EOFError("no hello")
            hello = worker.conn.recv()
        except (EOFError, OSError) as exc:
            self._discard(worker)
            raise BackendUnavailable("the local simulator's worker process did not start") from exc
        if hello[0] != "ready":
            self._discard(worker)
            raise BackendUnavailable("the local simulator's worker process did not start")
        return worker

    def _discard(self, worker: _Worker) -> None:
        self._all.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        worker.kill()

    def close(self) -> None:
        """Stop every worker (runs in progress end as `Cancelled` in their threads)."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._idle.clear()
        for worker in workers:
            self._discard(worker)
