"""Connection-level limits for the HTTP transports: slow and idle peers must not deny service to others.

uvicorn (0.55, h11) has no deadline for a request's headers: its keep-alive timer is armed only after
a response (`H11Protocol.on_response_complete`) and cancelled by any byte received
(`data_received`), so a connection that sends nothing, or a header line every few seconds, stays
open for ever. Its only connection bound, `limit_concurrency`, counts open connections, so a few
hundred such connections make it answer 503 to every caller.

`GuardedH11Protocol` (uvicorn's `http=` protocol class) adds, per process:

- a deadline for a request's headers (`http_header_timeout_seconds`), counted from the moment the
  connection opens or the previous response ends: a peer still short of a complete request head
  then is disconnected (408 if it had sent part of one, silently if nothing);
- a cap on open connections per peer (`http_max_connections_per_peer`; the peer is the TCP peer's
  IPv4 address, or its IPv6 /64), beyond which a new connection is answered 503 and closed at once;
- a cap on open connections in all (`http_max_connections`): when the server is full, a new
  connection takes the place of one that is waiting for a request (idle or sending headers) from
  the peer holding the most connections, if that peer holds more than the newcomer's; otherwise
  it is answered 503. Connections with a request in progress are never displaced.

The body deadline (`http_body_timeout_seconds`) is kept by the scope gate in `http_app`, where the
body is read. Header size is bounded by h11 (`h11_max_incomplete_event_size`, 16 KiB: 400 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

if TYPE_CHECKING:
    from mcp_server.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    keep_alive: int = 5
    body_timeout: float = 60.0
    max_connections: int = 256
    max_per_peer: int = 64  # 0: no per-peer cap (behind a proxy every peer is the proxy)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        """The limits in `settings` (`MACROSLOW_HTTP_*`)."""
        return cls(
            header_timeout=settings.http_header_timeout_seconds,
            keep_alive=settings.http_keep_alive_seconds,
            body_timeout=settings.http_body_timeout_seconds,
            max_connections=settings.http_max_connections,
            max_per_peer=settings.http_max_connections_per_peer,
        )


_limits = ConnectionLimits()


def configure(limits: ConnectionLimits) -> None:
    """Set the limits the protocol applies in this process (once, before uvicorn starts serving)."""
    global _limits
    _limits = limits


def peer_key(peername: Any) -> str:
    """Who a connection counts against: the IPv4 address, or the /64 of an IPv6 one."""
    host = peername[0] if isinstance(peername, tuple) and peername else ""
    if not isinstance(host, str) or not host:
        return "local"  # a Unix socket: one peer
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"
    return str(ip)


_BUSY_BODY = b'{"error": "temporarily_unavailable", "error_description": "too many connections"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)
_TIMEOUT_BODY = b'{"error": "timeout", "error_description": "request headers not received in time"}'
_HEADER_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class _Tally:
    """Counts refusals for the log: the first at once, then one summary per 10 s while they go on."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.next_summary: asyncio.TimerHandle | None = None

    def add(self, reason: str) -> None:
        self.counts[reason] += 1
        if self.next_summary is None:
            self._summary()

    def _summary(self) -> None:
        self.next_summary = None
        if self.counts:
            summary = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(self.counts.items()))
            log.warning("HTTP connections refused or closed (10 s window): %s", summary)
            self.counts.clear()
            self.next_summary = asyncio.get_running_loop().call_later(10, self._summary)


class _Registry:
    """The open connections of one uvicorn server (one process), in the order they opened."""

    def __init__(self) -> None:
        self.open: dict[GuardedH11Protocol, str] = {}
        self.per_peer: Counter[str] = Counter()
        self.tally = _Tally()

    def admit(self, conn: GuardedH11Protocol, peer: str, limits: ConnectionLimits) -> str | None:
        """Register `conn`, or say why not ("peer_limit", "server_full")."""
        held = self.per_peer[peer]
        if limits.max_per_peer and held >= limits.max_per_peer:
            return "peer_limit"
        if len(self.open) >= limits.max_connections:
            waiting = [c for c in self.open if c.waiting_for_request()]
            if not waiting:
                return "server_full"
            # the oldest waiting connection of the peer holding the most (dicts keep opening order)
            victim = max(waiting, key=lambda c: self.per_peer[self.open[c]])
            if self.per_peer[self.open[victim]] <= held:
                return "server_full"
            self.release(victim)
            victim.displace()
            self.tally.add("displaced")
        self.open[conn] = peer
        self.per_peer[peer] += 1
        return None

    def release(self, conn: GuardedH11Protocol) -> None:
        peer = self.open.pop(conn, None)
        if peer is not None:
            self.per_peer[peer] -= 1
            if self.per_peer[peer] <= 0:
                del self.per_peer[peer]


_registries: weakref.WeakKeyDictionary[ServerState, _Registry] = weakref.WeakKeyDictionary()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and per-peer / total connection caps."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = _limits
        self.registry = _registries.setdefault(server_state, _Registry())
        self.refused = False
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        reason = self.registry.admit(self, peer_key(transport.get_extra_info("peername")), self.limits)
        if reason is not None:
            self.refused = True
            self.registry.tally.add(reason)
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self.registry.release(self)
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()  # the request head is complete
        elif self.header_timer is None and not self.transport.is_closing():
            self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's head, on a kept-alive connection

    def waiting_for_request(self) -> bool:
        """Idle, or receiving a request head: nothing of ours in progress."""
        return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def displace(self) -> None:
        """Closed to make room for a new connection when the server is full."""
        self._cancel_header_timer()
        self._close()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self.header_timer = self.loop.call_later(self.limits.header_timeout, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timeout(self) -> None:
        self.header_timer = None
        if self.transport.is_closing() or not self.waiting_for_request():
            return
        self.registry.tally.add("header_timeout")
        if self.conn.trailing_data[0]:  # part of a request head arrived: say why it is dropped
            self.transport.write(_HEADER_TIMEOUT)
        self._close()

    def _close(self) -> None:
        if self.transport.is_closing():
            return
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()
