"""The subscription bus behind `subscriptions/listen`, across replicas.

`open_bus(database_url)` picks one by the database:

- SQLite (one machine, usually one process): `LocalBus`, the SDK's in-memory bus. A listener hears
  what this process publishes.
- PostgreSQL (several processes or replicas): `PostgresBus`. `publish` delivers to this process's
  listeners at once and sends `NOTIFY macroslow_events` with the event; every process `LISTEN`s
  there on a connection of its own (a thread) and hands what other processes published to its
  listeners on the event loop. So a `subscriptions/listen` stream on any replica hears a job run on
  any other.

The payload names the event and nothing else: its kind, the resource URI for `ResourceUpdated`, and
a random id of the publishing process (so it skips its own). No caller, token or result travels;
reading the resource checks, as always, that the reader owns it. A payload over `PAYLOAD_LIMIT`
bytes is not sent (logged). Delivery is what the SDK promises for its own bus: at most once, no
replay. If the listening connection is lost the bus logs it once and reconnects with backoff;
events published meanwhile do not reach this process's listeners (a client re-reads the resource).
A failed `NOTIFY` is retried once on a new connection, then logged; it never fails the publisher.

The bus is started when the services open (`ServiceHost`) and closed with them.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    SubscriptionBus,
    ToolsListChanged,
)

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

CHANNEL = "macroslow_events"
PAYLOAD_LIMIT = 7900  # PostgreSQL refuses notification payloads of 8000 bytes or more
LISTEN_SECONDS = 1.0  # how long the listening thread waits before looking whether it should stop
START_SECONDS = 5.0  # how long `start` waits for the first LISTEN before going on (it keeps trying)
APPLICATION = "macroslow-events"  # application_name of the bus's connections (pg_stat_activity)

_KINDS: dict[str, ServerEvent] = {
    "tools_list_changed": ToolsListChanged(),
    "prompts_list_changed": PromptsListChanged(),
    "resources_list_changed": ResourcesListChanged(),
}


class ReplicaBus(SubscriptionBus, Protocol):
    """A `SubscriptionBus` the server starts (on the event loop) and closes with its services."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalBus(InMemorySubscriptionBus):
    """The SDK's in-process bus, with nothing to start or close."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def open_bus(database_url: str) -> ReplicaBus:
    """`PostgresBus` for a PostgreSQL database, else `LocalBus`. Opens no connection yet."""
    if database_url.startswith("postgresql"):
        return PostgresBus(database_url)
    return LocalBus()


def encode(origin: str, event: ServerEvent) -> str | None:
    """The notification payload for `event`, or None when it would be over `PAYLOAD_LIMIT` bytes."""
    body: dict[str, str] = {"v": "1", "from": origin}
    if isinstance(event, ResourceUpdated):
        body.update(kind="resource_updated", uri=event.uri)
    else:
        body["kind"] = next(kind for kind, known in _KINDS.items() if known == event)
    payload = json.dumps(body, separators=(",", ":"))
    return payload if len(payload.encode("utf-8")) <= PAYLOAD_LIMIT else None


def decode(payload: str) -> tuple[str, ServerEvent] | None:
    """(origin, event) of a payload; None for one this version does not read."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("v") != "1" or not isinstance(body.get("from"), str):
        return None
    kind = body.get("kind")
    if kind == "resource_updated":
        uri = body.get("uri")
        return (body["from"], ResourceUpdated(uri=uri)) if isinstance(uri, str) else None
    event = _KINDS.get(kind) if isinstance(kind, str) else None
    return None if event is None else (body["from"], event)


class PostgresBus:
    """Fan-out across the processes sharing one PostgreSQL database; see the module docstring."""

    def __init__(self, database_url: str, *, channel: str = CHANNEL) -> None:
        self.database_url = database_url
        self.channel = channel
        self.origin = uuid.uuid4().hex  # this process's id in payloads, to skip its own events
        self._local = InMemorySubscriptionBus()
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._sender: Any = None  # the psycopg connection NOTIFY is sent on (under _send_lock)
        self._send_lock = threading.Lock()
        self._send_failing = False  # read and written on the event loop only (in `publish`)

    # -- SubscriptionBus ---------------------------------------------------------------------
    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        return self._local.subscribe(listener)

    async def publish(self, event: ServerEvent) -> None:
        """This process's listeners at once; the other processes' through NOTIFY. Never raises."""
        await self._local.publish(event)
        payload = encode(self.origin, event)
        if payload is None:
            log.warning("an event over %d bytes was not sent to the other server processes", PAYLOAD_LIMIT)
            return
        try:
            await anyio.to_thread.run_sync(self._notify, payload)
        except Exception as exc:  # the publisher (a job's announcement) must not fail for this
            first, self._send_failing = not self._send_failing, True
            if first:
                log.warning("events are not reaching the other server processes (%s)", type(exc).__name__)
            return
        if self._send_failing:
            self._send_failing = False
            log.info("events reach the other server processes again")

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Called on the event loop: listen (a thread), waiting up to `START_SECONDS` for the first
        LISTEN; if the database does not answer by then, the thread keeps trying."""
        if self._thread is not None:
            return
        self._token = anyio.lowlevel.current_token()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="macroslow-events", daemon=True)
        self._thread.start()
        await anyio.to_thread.run_sync(self._listening.wait, START_SECONDS)

    async def close(self) -> None:
        """Stop listening and close both connections (waits at most about `LISTEN_SECONDS`)."""
        thread, self._thread = self._thread, None
        self._stop.set()
        self._token = None
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join, LISTEN_SECONDS + 1)
        with self._send_lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.close()

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up."""
        return self._listening.is_set()

    # -- worker threads ----------------------------------------------------------------------
    def _connect(self, role: str) -> Any:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(
            url, autocommit=True, connect_timeout=10, application_name=f"{APPLICATION}-{role}"
        )

    def _notify(self, payload: str) -> None:
        """NOTIFY on the sending connection; once more on a new one if that one was lost."""
        import psycopg

        with self._send_lock:
            for attempt in (1, 2):
                if self._sender is None or self._sender.closed:
                    self._sender = self._connect("notify")
                try:
                    self._sender.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
                    return
                except psycopg.Error:
                    self._sender.close()
                    self._sender = None
                    if attempt == 2:
                        raise

    def _listen(self) -> None:
        """LISTEN, and hand each notification from another process to the event loop; reconnect
        with backoff (up to 5 s) when the connection is lost, logging once per outage."""
        import psycopg

        conn: Any = None
        failures = 0
        stop = self._stop
        while not stop.is_set():
            try:
                if conn is None:
                    conn = self._connect("listen")
                    conn.execute(f"LISTEN {self.channel}")
                    self._listening.set()
                    if failures:
                        log.info("listening for other server processes' events again")
                    failures = 0
                for note in conn.notifies(timeout=LISTEN_SECONDS, stop_after=1):
                    self._hear(note.payload)
            except (psycopg.Error, OSError) as exc:
                self._listening.clear()
                if conn is not None:
                    conn.close()
                    conn = None
                failures += 1
                if failures == 1:
                    log.warning(
                        "lost the connection for other server processes' events (%s); reconnecting",
                        type(exc).__name__,
                    )
                stop.wait(min(5.0, 0.1 * 2**failures))
        self._listening.clear()
        if conn is not None:
            conn.close()

    def _hear(self, payload: str) -> None:
        decoded = decode(payload)
        if decoded is None:
            log.debug("ignored an event this version does not read")
            return
        origin, event = decoded
        token = self._token
        if origin == self.origin or token is None:
            return  # our own (delivered when published), or closing
        try:
            anyio.from_thread.run(self._local.publish, event, token=token)
        except RuntimeError:  # the event loop has ended
            log.debug("dropped an event: the event loop has ended")
