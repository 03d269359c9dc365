"""The subscription bus across processes: two `PostgresBus` instances on one PostgreSQL database hear
each other, keep hearing after their connections are killed, and never carry more than the event."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import anyio
import psycopg
import pytest
from mcp.server.subscriptions import ResourceUpdated, ServerEvent, ToolsListChanged

from mcp_server.notify_bus import PAYLOAD_LIMIT, LocalBus, PostgresBus, decode, encode, open_bus

pytestmark = pytest.mark.anyio


async def until(check: Callable[[], bool], seconds: float = 10) -> None:
    with anyio.fail_after(seconds):
        while not check():
            await anyio.sleep(0.02)


@pytest.fixture
async def two_buses(postgres_url: str) -> AsyncIterator[tuple[PostgresBus, PostgresBus]]:
    a, b = PostgresBus(postgres_url), PostgresBus(postgres_url)
    await a.start()
    await b.start()
    try:
        assert a.listening and b.listening
        yield a, b
    finally:
        await a.close()
        await b.close()


def _kill(postgres_url: str, role: str) -> int:
    """pg_terminate_backend on the buses' connections of `role` ("listen" or "notify"); how many."""
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            (f"macroslow-events-{role}",),
        ).fetchall()
    return len(rows)


async def test_a_publish_on_one_bus_reaches_a_listener_on_the_other(
    two_buses: tuple[PostgresBus, PostgresBus],
) -> None:
    a, b = two_buses
    heard_a: list[ServerEvent] = []
    heard_b: list[ServerEvent] = []
    a.subscribe(heard_a.append)
    unsubscribe = b.subscribe(heard_b.append)
    sent = [ResourceUpdated(uri="jobs://one"), ToolsListChanged(), ResourceUpdated(uri="jobs://two")]
    for event in sent:
        await a.publish(event)
    await until(lambda: len(heard_b) == 3)
    assert heard_b == sent  # in order
    await anyio.sleep(0.3)
    assert heard_a == sent  # the publisher's own listeners hear each event once, not again via NOTIFY
    unsubscribe()
    await b.publish(ResourceUpdated(uri="jobs://three"))
    await until(lambda: len(heard_a) == 4)
    assert heard_a[-1] == ResourceUpdated(uri="jobs://three") and len(heard_b) == 3


async def test_listening_and_sending_resume_after_the_connections_are_killed(
    two_buses: tuple[PostgresBus, PostgresBus], postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = two_buses
    heard: list[ServerEvent] = []
    b.subscribe(heard.append)
    await a.publish(ResourceUpdated(uri="jobs://before"))
    await until(lambda: ResourceUpdated(uri="jobs://before") in heard)
    caplog.set_level(logging.INFO, logger="mcp_server.notify_bus")
    assert _kill(postgres_url, "listen") == 2 and _kill(postgres_url, "notify") == 1
    # Events sent while b reconnects are lost to b (no replay): send until one arrives.
    with anyio.fail_after(20):
        n = 0
        while not any(getattr(e, "uri", "").startswith("jobs://after-") for e in heard):
            n += 1
            await a.publish(ResourceUpdated(uri=f"jobs://after-{n}"))
            await anyio.sleep(0.1)
    await until(lambda: a.listening and b.listening)
    lost = [r for r in caplog.records if r.getMessage().startswith("lost the connection")]
    assert len(lost) == 2  # once per bus, however many tries the reconnection took
    # a's NOTIFY connection was killed too: the next send used a new one, without a warning.
    assert not [r for r in caplog.records if "not reaching" in r.getMessage()]
    await b.publish(ResourceUpdated(uri="jobs://back"))
    await until(lambda: ResourceUpdated(uri="jobs://back") in heard)


async def test_a_send_that_fails_is_logged_once_and_never_fails_the_publisher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = PostgresBus("postgresql+psycopg://nobody@127.0.0.1:9/none")  # nothing answers there
    heard: list[ServerEvent] = []
    bus.subscribe(heard.append)
    caplog.set_level(logging.WARNING, logger="mcp_server.notify_bus")
    for n in range(3):
        await bus.publish(ResourceUpdated(uri=f"jobs://{n}"))
    assert [getattr(e, "uri", None) for e in heard] == ["jobs://0", "jobs://1", "jobs://2"]
    assert len([r for r in caplog.records if "not reaching" in r.getMessage()]) == 1
    await bus.close()


def test_the_payload_is_the_event_only_and_bounded() -> None:
    payload = encode("origin", ResourceUpdated(uri="jobs://x"))
    assert payload == '{"v":"1","from":"origin","kind":"resource_updated","uri":"jobs://x"}'
    assert decode(payload) == ("origin", ResourceUpdated(uri="jobs://x"))
    assert decode(encode("o", ToolsListChanged()) or "") == ("o", ToolsListChanged())
    assert encode("origin", ResourceUpdated(uri="jobs://" + "x" * PAYLOAD_LIMIT)) is None
    for junk in ("", "[]", "{}", '{"v":"2","from":"o","kind":"tools_list_changed"}', '{"v":"1","from":"o"}'):
        assert decode(junk) is None
    assert decode('{"v":"1","from":"o","kind":"resource_updated","uri":3}') is None


def test_the_bus_follows_the_database() -> None:
    assert isinstance(open_bus("sqlite:////tmp/ledger.db"), LocalBus)
    assert isinstance(open_bus("postgresql+psycopg://u@h/db"), PostgresBus)
