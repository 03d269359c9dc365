"""The witness server over real loopback HTTP (uvicorn in a thread), driven by the real client:
c2sp.org/tlog-witness add-checkpoint, every refusal, and compare-and-swap under concurrency."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey
from sqlalchemy import Engine

from mcp_server import cli
from mcp_server.db import Base, open_engine
from mcp_server.errors import BackendUnavailable, KeyStoreError
from mcp_server.ledger import merkle
from mcp_server.witness import client, cosignature, service
from mcp_server.witness.errors import PolicyError, WitnessConflict, WitnessRefused, WitnessUnavailable
from mcp_server.witness.models import WitnessCheckpoint
from tests.witness.conftest import ORIGIN, Log, seeded

NAME = "witness.example/w1"
NOW = 1_750_000_000


def _engine(path: Path) -> Engine:
    engine = open_engine(f"sqlite:///{path}", durable=True, migrate_schema=False)
    Base.metadata.create_all(engine, tables=[WitnessCheckpoint.__table__])  # type: ignore[list-item]
    return engine


class Server:
    def __init__(self, witness: service.WitnessService) -> None:
        self.witness = witness
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(service.build_app(witness), log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the witness server did not start"
            time.sleep(0.01)

    def add(self, old: int, proof: list[bytes], note: str) -> list[str]:
        return client.add_checkpoint(self.url, old, proof, note, timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def witness_key() -> MLDSA44PrivateKey:
    return seeded("witness server")


@pytest.fixture
def server(tmp_path: Path, log: Log, witness_key: MLDSA44PrivateKey) -> Iterator[Server]:
    engine = _engine(tmp_path / "witness.sqlite")
    logs = [service.LogKey(ORIGIN, ORIGIN, log.key.public_key())]
    running = Server(service.WitnessService(NAME, witness_key, logs, engine, clock=lambda: NOW))
    yield running
    running.stop()
    engine.dispose()


def _verified(note: str, lines: list[str], key: MLDSA44PrivateKey) -> int:
    assert len(lines) == 1
    return cosignature.verify_line(note + lines[0], NAME, key.public_key())


def test_first_checkpoint_then_growth(server: Server, log: Log, witness_key: MLDSA44PrivateKey) -> None:
    note = log.note(5)
    assert _verified(note, server.add(0, [], note), witness_key) == NOW
    assert server.witness.recorded(ORIGIN) == (5, log.root(5))
    for old, new in [(5, 12), (12, 13), (13, 32), (32, 33), (33, 64)]:
        note = log.note(new)
        lines = server.add(old, log.proof(old, new), note)
        assert _verified(note, lines, witness_key) == NOW
        assert server.witness.recorded(ORIGIN) == (new, log.root(new))
    # The same checkpoint again (old = size, same root) is cosigned again and changes nothing.
    assert _verified(note, server.add(64, [], note), witness_key) == NOW
    assert server.witness.recorded(ORIGIN) == (64, log.root(64))


def test_empty_tree(server: Server, log: Log, witness_key: MLDSA44PrivateKey) -> None:
    with pytest.raises(WitnessRefused) as info:
        server.add(0, [], log.note(0, root=log.root(3)))
    assert info.value.status == 422
    note = log.note(0)
    assert _verified(note, server.add(0, [], note), witness_key) == NOW
    assert server.witness.recorded(ORIGIN) == (0, merkle.EMPTY_ROOT)
    server.add(0, [], log.note(4))


def test_conflict_names_the_recorded_size(server: Server, log: Log) -> None:
    server.add(0, [], log.note(8))
    with pytest.raises(WitnessConflict) as info:
        server.add(0, [], log.note(10))
    assert info.value.size == 8
    with pytest.raises(WitnessConflict) as info:
        server.add(9, log.proof(9, 10), log.note(10))
    assert info.value.size == 8
    # The answer itself, as the spec has it.
    body = client.request_body(3, log.proof(3, 10), log.note(10))
    response = httpx2.post(server.url + "/add-checkpoint", content=body)
    assert response.status_code == 409
    assert response.headers["content-type"] == "text/x.tlog.size"
    assert response.content == b"8\n"
    # A client that learnt the size goes on from it.
    server.add(info.value.size, log.proof(8, 10), log.note(10))


def test_a_fork_is_refused_and_never_cosigned(server: Server, log: Log) -> None:
    server.add(0, [], log.note(12))
    fork = Log(log.key)
    fork.hashes[3] = merkle.leaf_hash(b"rewritten history")
    for old, proof in [(12, []), (12, fork.proof(11, 12))]:
        with pytest.raises(WitnessRefused) as info:
            server.add(old, proof, fork.note(12))
        assert info.value.status == 422
    # A larger tree that forks from the recorded one: its proof can't lead to the recorded root.
    with pytest.raises(WitnessRefused) as info:
        server.add(12, fork.proof(12, 20), fork.note(20))
    assert info.value.status == 422
    assert server.witness.recorded(ORIGIN) == (12, log.root(12))


def test_a_bad_consistency_proof_is_refused(server: Server, log: Log) -> None:
    server.add(0, [], log.note(6))
    proof = log.proof(6, 20)
    for bad in [proof[:-1], [*proof, proof[0]], [bytes(32), *proof[1:]], list(reversed(proof)), []]:
        with pytest.raises(WitnessRefused) as info:
            server.add(6, bad, log.note(20))
        assert info.value.status == 422
    # A proof that holds for other sizes does not hold for these.
    with pytest.raises(WitnessRefused):
        server.add(6, log.proof(5, 20), log.note(20))
    assert server.witness.recorded(ORIGIN) == (6, log.root(6))


def test_a_non_empty_proof_from_size_zero_is_refused(server: Server, log: Log) -> None:
    body = client.request_body(5, log.proof(5, 9), log.note(9)).replace(b"old 5\n", b"old 0\n", 1)
    response = httpx2.post(server.url + "/add-checkpoint", content=body)
    assert response.status_code == 422
    with pytest.raises(ValueError, match="empty"):
        client.request_body(0, [bytes(32)], log.note(9))


def test_a_smaller_tree_is_refused(server: Server, log: Log) -> None:
    server.add(0, [], log.note(20))
    with pytest.raises(WitnessRefused) as info:
        server.add(20, [], log.note(15))  # old above the checkpoint size
    assert info.value.status == 400
    with pytest.raises(WitnessConflict) as conflict:
        server.add(15, [], log.note(15))
    assert conflict.value.size == 20
    with pytest.raises(WitnessConflict):
        server.add(0, [], log.note(15))
    assert server.witness.recorded(ORIGIN) == (20, log.root(20))


def test_unknown_log_and_bad_signatures(server: Server, log: Log) -> None:
    stranger = Log(log.key, origin="other.example/log")
    with pytest.raises(WitnessRefused) as info:
        server.add(0, [], stranger.note(3))
    assert info.value.status == 404
    # Signed by another key under the log's name: not a trusted key, so no signature verifies.
    with pytest.raises(WitnessRefused) as info:
        server.add(0, [], log.note(3, key=seeded("impostor")))
    assert info.value.status == 403
    # A line with the trusted key's name and ID whose signature fails: 403 too.
    note = log.note(3)
    tampered = note.replace(note.splitlines()[2], __import__("base64").b64encode(log.root(4)).decode())
    with pytest.raises(WitnessRefused) as info:
        server.add(0, [], tampered)
    assert info.value.status == 403
    # No log signature at all (only a witness's).
    text = note[: note.index("\n\n") + 1]
    only_other = text + "\n" + cosignature.sign_line(text, "someone.example", seeded("someone"), 1)
    with pytest.raises(WitnessRefused) as info:
        server.add(0, [], only_other)
    assert info.value.status == 403
    assert server.witness.recorded(ORIGIN) is None
    assert server.witness.recorded("other.example/log") is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 0\n",
        b"old 01\n\n{note}",
        b"old -1\n\n{note}",
        b"new 0\n\n{note}",
        b"old 0\nnot base64\n\n{note}",
        b"old 0\nAAAA\n\n{note}",
        b"old 0\n\n{note_no_signature}",
        b"old 0\n\nnot a checkpoint\n\n{line}",
        b"old 0\r\n\n{note}",
        b"\xff\xfe\n\n{note}",
        b"old 18446744073709551616\n\n{note}",
    ],
)
def test_malformed_requests(server: Server, log: Log, body: bytes) -> None:
    note = log.note(4)
    text = note[: note.index("\n\n") + 1]
    line = note[note.index("\n\n") + 2 :]
    body = (
        body.replace(b"{note_no_signature}", text.encode())
        .replace(b"{note}", note.encode())
        .replace(b"{line}", line.encode())
    )
    response = httpx2.post(server.url + "/add-checkpoint", content=body)
    assert response.status_code == 400, response.text
    assert server.witness.recorded(ORIGIN) is None


def test_too_many_proof_lines_and_too_large_bodies(server: Server, log: Log) -> None:
    server.add(0, [], log.note(4))
    with pytest.raises(ValueError, match="at most 63"):
        client.request_body(4, [bytes(32)] * 64, log.note(9))
    body = b"old 4\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\n" + log.note(9).encode()
    assert httpx2.post(server.url + "/add-checkpoint", content=body).status_code == 400
    huge = b"old 4\n\n" + b"x" * (service.MAX_REQUEST_BYTES + 1)
    assert httpx2.post(server.url + "/add-checkpoint", content=huge).status_code == 413
    assert httpx2.get(server.url + "/add-checkpoint").status_code == 405
    assert httpx2.post(server.url + "/other", content=b"").status_code == 404


def test_concurrent_requests_cannot_both_advance(server: Server, log: Log) -> None:
    server.add(0, [], log.note(10))
    sizes = list(range(11, 27))

    def submit(size: int) -> int | str:
        try:
            server.add(10, log.proof(10, size), log.note(size))
        except WitnessConflict as exc:
            return f"409 {exc.size}"
        return size

    with ThreadPoolExecutor(len(sizes)) as pool:
        results = list(pool.map(submit, sizes))
    winners = [r for r in results if isinstance(r, int)]
    assert len(winners) == 1, results
    (winner,) = winners
    assert all(r == f"409 {winner}" or isinstance(r, int) for r in results)
    assert server.witness.recorded(ORIGIN) == (winner, log.root(winner))


def test_concurrent_compare_and_swap_in_the_service(tmp_path: Path, log: Log) -> None:
    """Many threads on one service and a fresh origin: exactly one first checkpoint is recorded."""
    engine = _engine(tmp_path / "cas.sqlite")
    witness = service.WitnessService(
        NAME, seeded("w"), [service.LogKey(ORIGIN, ORIGIN, log.key.public_key())], engine
    )
    bodies = [client.request_body(0, [], log.note(size)) for size in range(1, 17)]
    barrier = threading.Barrier(len(bodies))

    def submit(body: bytes) -> int:
        barrier.wait()
        return witness.add_checkpoint(body).status

    with ThreadPoolExecutor(len(bodies)) as pool:
        statuses = list(pool.map(submit, bodies))
    assert statuses.count(200) == 1 and statuses.count(409) == len(bodies) - 1, statuses
    engine.dispose()


def test_unreachable_witness() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(WitnessUnavailable, match="unreachable"):
        client.add_checkpoint(f"http://127.0.0.1:{port}", 0, [], "a\n1\nb\n\n— x y\n", timeout=2)


def test_client_maps_statuses(log: Log) -> None:
    def transport(status: int, body: bytes, content_type: str = "text/plain") -> httpx2.Client:
        def handler(request: httpx2.Request) -> httpx2.Response:
            assert request.url.path == "/prefix/add-checkpoint"
            assert request.content.startswith(b"old 0\n\n")
            return httpx2.Response(status, content=body, headers={"content-type": content_type})

        return httpx2.Client(transport=httpx2.MockTransport(handler))

    def call(status: int, body: bytes) -> list[str]:
        return client.add_checkpoint(
            "http://w.example/prefix/", 0, [], log.note(1), timeout=1, client=transport(status, body)
        )

    line = cosignature.sign_line(log.note(1), NAME, seeded("w"), 5)
    assert call(200, line.encode() * 2) == [line, line]
    for bad in [b"", b"\n", b"no dash\n", line.encode()[:-1], b"\xff\n"]:
        with pytest.raises(WitnessUnavailable):
            call(200, bad)
    with pytest.raises(WitnessConflict) as conflict:
        call(409, b"42\n")
    assert conflict.value.size == 42
    for bad in [b"042\n", b"42", b"x\n"]:
        with pytest.raises(WitnessRefused):
            call(409, bad)
    for status in (400, 403, 404, 422, 401, 413, 302):
        with pytest.raises(WitnessRefused) as refused:
            call(status, b"because\x1b[31m reasons\nsecond line")
        assert refused.value.status == status
        assert refused.value.reason == "because?[31m reasons"
    for status in (429, 500, 502, 503):
        with pytest.raises(WitnessUnavailable):
            call(status, b"busy")


# -- configuration, keys, CLI -----------------------------------------------------------------------


def test_config_key_generation_and_cli_vkey(
    tmp_path: Path, log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "witness.toml"
    config_path.write_text(
        f'name = "{NAME}"\nkey_file = "keys/witness.pem"\n\n[[log]]\nvkey = "{log.vkey()}"\n'
    )
    config = service.load_config(config_path)
    assert config.name == NAME and config.logs[0].origin == ORIGIN
    assert config.database.startswith("sqlite:///") and config.database.endswith("witness.sqlite")
    with pytest.raises(SystemExit) as done:
        cli.main(["witness", "vkey", "--config", str(config_path)])
    assert done.value.code == 0
    printed = capsys.readouterr().out.strip()
    key_file = tmp_path / "keys" / "witness.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = service.load_or_create_key(key_file)
    assert printed == cosignature.vkey(NAME, key.public_key())
    assert cosignature.parse_vkey(printed)[0] == NAME
    os.chmod(key_file, 0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        service.load_or_create_key(key_file)


def test_open_service_needs_the_witness_table(tmp_path: Path, log: Log) -> None:
    config_path = tmp_path / "witness.toml"
    config_path.write_text(f'name = "{NAME}"\nkey_file = "k.pem"\n[[log]]\nvkey = "{log.vkey()}"\n')
    config = service.load_config(config_path)
    bare = open_engine(f"sqlite:///{tmp_path / 'bare.sqlite'}", migrate_schema=False)
    with pytest.raises(BackendUnavailable, match="witness_checkpoints"):
        service.open_service(config, bare)
    witness = service.open_service(config, _engine(tmp_path / "ok.sqlite"))
    assert witness.logs[ORIGIN][0].key_name == ORIGIN


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('key_file = "k"\n[[log]]\nvkey = "{vkey}"\n', "name"),
        ('name = "a b"\nkey_file = "k"\n[[log]]\nvkey = "{vkey}"\n', "name"),
        ('name = "w"\n[[log]]\nvkey = "{vkey}"\n', "key_file"),
        ('name = "w"\nkey_file = "k"\n', "no \\[\\[log\\]\\]"),
        ('name = "w"\nkey_file = "k"\n[[log]]\nvkey = "x+00000000+AA=="\n', "vkey"),
        ('name = "w"\nkey_file = "k"\n[[log]]\nvkey = "{vkey}"\n[[log]]\nvkey = "{vkey}"\n', "twice"),
        ('name = "w"\nkey_file = "k"\nport = 1\n[[log]]\nvkey = "{vkey}"\n', "unknown"),
        ('name = "w"\nkey_file = "k"\n[[log]]\nvkey = "{vkey}"\nurl = "x"\n', "unknown"),
        ("name = \n", "TOML"),
    ],
)
def test_bad_configurations(tmp_path: Path, log: Log, text: str, match: str) -> None:
    path = tmp_path / "w.toml"
    path.write_text(text.replace("{vkey}", log.vkey()))
    with pytest.raises(PolicyError, match=match):
        service.load_config(path)
