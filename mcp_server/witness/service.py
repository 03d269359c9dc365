"""A transparency log witness: the add-checkpoint call of c2sp.org/tlog-witness, as an ASGI app.

    POST /add-checkpoint

The request (tlog-witness, "add-checkpoint") is an old size line, zero to 63 consistency proof lines,
an empty line and a signed checkpoint. The witness answers, in this order:

    400  the body is not such a request (or is not UTF-8, or the note not a checkpoint)
    404  the origin is not a log this witness is configured for
    403  no signature by a trusted key of that log verifies, or a line with a trusted key's name and
         ID fails to verify ("such a note is malformed per signed-note")
    400  the old size is above the checkpoint size
    409  the old size is not the size it recorded (0 if none); body "<recorded size>\\n",
         Content-Type text/x.tlog.size
    422  a checkpoint of size 0 whose root is not the empty tree's; a non-empty proof from size 0; a
         consistency proof that does not verify from the recorded (size, root); the same size as
         recorded with another root (a fork)
    200  one ML-DSA-44 cosignature line by the witness's key (c2sp.org/tlog-cosignature; start 0, end
         the tree size, a non-zero timestamp: "The cosignature MUST NOT omit the timestamp")

plus 413 for a body over `MAX_REQUEST_BYTES`, 408 for one not received within `BODY_TIMEOUT`, and 503
when the database fails. A log signs its checkpoints in the same ML-DSA-44 cosignature format, with a
signature line named by its key name (normally its origin: tlog-checkpoint, "Signatures").

State. For each origin the witness records the latest checkpoint it cosigned, (size, root), in the
table `witness_checkpoints` (`models`). "Checking the old size against the latest checkpoint and
persisting the new checkpoint must be performed atomically": the record moves by compare-and-swap, an
UPDATE ... WHERE size = old AND root = recorded root (an INSERT that must not collide, for a new
origin), so of two concurrent requests from the same state only one advances; the other gets 409.
The record is persisted before the cosignature is made and sent ("The witness MUST persist the new
checkpoint before responding"), so a smaller tree or a fork of a recorded one is never cosigned.

Refusals are logged (never the request body); a known log's validly signed checkpoint that fails a
consistency check is logged as a warning, since "it might be proof of log misbehavior".

Not implemented: the optional sign-subtree call and the monitoring GET <origin hash>/checkpoint (the
record keeps no log signature to serve).

Configuration (`load_config`), a TOML file:

    name = "witness.example/w1"            # the witness's key name, in its cosignature lines
    key_file = "witness.key.pem"           # ML-DSA-44 PKCS#8 PEM, relative to this file;
                                           # generated with mode 0600 when absent
    database = "sqlite:////var/lib/witness/witness.sqlite"   # optional; default witness.sqlite
                                                             # beside this file; PostgreSQL allowed
    [[log]]
    vkey = "example.com/log+1a2b3c4d+Bh..."   # a 0x06 vkey; its key name is the origin unless
    # origin = "example.com/log"             # `origin` says otherwise (several keys per origin allowed)
"""

from __future__ import annotations

import logging
import os
import re
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey
from sqlalchemy import Engine, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcp_server.crypto.keys import read_private_key_file
from mcp_server.db import database_errors, open_engine
from mcp_server.errors import BackendUnavailable, KeyStoreError, NotFound, SignatureInvalid
from mcp_server.ledger import checkpoint as notes
from mcp_server.ledger.merkle import EMPTY_ROOT, HASH_SIZE, ProofError, verify_consistency
from mcp_server.witness import cosignature
from mcp_server.witness.errors import PolicyError
from mcp_server.witness.models import MAX_RECORDED_SIZE, WitnessCheckpoint

log = logging.getLogger(__name__)

MAX_PROOF_LINES = 63  # tlog-witness: "The client MUST NOT send more than 63 consistency proof lines"
# The old size line, the proof lines (44 base64 characters and a newline each), the blank line, a note.
MAX_REQUEST_BYTES = 32 + MAX_PROOF_LINES * 45 + 1 + notes.MAX_NOTE_BYTES
BODY_TIMEOUT = 30.0
MAX_CONFIG_BYTES = 1 << 20
SIZE_CONTENT_TYPE = "text/x.tlog.size"
TEXT = "text/plain; charset=utf-8"

_OLD_LINE = re.compile(r"old (0|[1-9][0-9]{0,19})")
_U64_MAX = (1 << 64) - 1


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body, Content-Type."""

    status: int
    body: bytes
    content_type: str = TEXT

    @classmethod
    def text(cls, status: int, message: str) -> Reply:
        return cls(status, (message + "\n").encode("utf-8"))


@dataclass(frozen=True)
class LogKey:
    """A key the witness trusts for an origin: its signature lines are named `key_name`."""

    origin: str
    key_name: str
    public_key: MLDSA44PublicKey = field(repr=False)


class _Refusal(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _refuse(status: int, message: str) -> _Refusal:
    return _Refusal(Reply.text(status, message))


# -- the witness ------------------------------------------------------------------------------------


class WitnessService:
    """The add-checkpoint logic over a database engine whose schema has `witness_checkpoints`."""

    def __init__(
        self,
        name: str,
        private_key: MLDSA44PrivateKey,
        logs: Iterable[LogKey],
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        cosignature.key_id(name, private_key.public_key())  # ValueError for a name notes can't carry
        self.name = name
        self._key = private_key
        self.engine = engine
        self._clock = clock
        self.logs: dict[str, list[LogKey]] = {}
        for entry in logs:
            self.logs.setdefault(entry.origin, []).append(entry)

    def vkey(self) -> str:
        return cosignature.vkey(self.name, self._key.public_key())

    @property
    def public_key(self) -> MLDSA44PublicKey:
        return self._key.public_key()

    def add_checkpoint(self, body: bytes) -> Reply:
        """Handle one add-checkpoint request body; the answer (module docs). BackendUnavailable when
        the database fails."""
        try:
            return self._add_checkpoint(body)
        except _Refusal as refusal:
            reply = refusal.reply
            log.info(
                "add-checkpoint refused with %d: %s",
                reply.status,
                reply.body[:200].decode("utf-8", "replace").strip(),
            )
            return reply

    def recorded(self, origin: str) -> tuple[int, bytes] | None:
        """The (size, root) recorded for `origin`, if any."""
        with database_errors(), self.engine.connect() as conn:
            row = conn.execute(
                select(WitnessCheckpoint.size, WitnessCheckpoint.root).where(
                    WitnessCheckpoint.origin == origin
                )
            ).first()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def _add_checkpoint(self, body: bytes) -> Reply:
        old_size, proof, note = parse_request(body)
        try:
            parsed = cosignature.ParsedNote.parse(note)
            checkpoint = parsed.checkpoint
        except SignatureInvalid as exc:
            raise _refuse(400, f"the checkpoint is malformed: {exc.message}") from None
        origin = checkpoint.origin
        keys = self.logs.get(origin)
        if not keys:
            raise _refuse(404, "unknown log origin")
        verified = 0
        for key in keys:
            try:
                verified += parsed.cosignature(key.key_name, key.public_key) is not None
            except SignatureInvalid as exc:
                raise _refuse(403, f"a signature by a trusted log key fails: {exc.message}") from None
        if not verified:
            raise _refuse(403, "no signature by a trusted key of this log")
        size, root = checkpoint.size, checkpoint.root
        if old_size > size:
            raise _refuse(400, f"old size {old_size} is above the checkpoint size {size}")
        if size > MAX_RECORDED_SIZE:
            raise _refuse(400, "tree sizes above 2^63-1 are beyond this witness")
        recorded = self.recorded(origin)
        recorded_size, recorded_root = recorded if recorded is not None else (0, EMPTY_ROOT)
        if old_size != recorded_size:
            raise _Refusal(Reply(409, f"{recorded_size}\n".encode("ascii"), SIZE_CONTENT_TYPE))
        try:
            if size == 0 and root != EMPTY_ROOT:
                raise ProofError("a checkpoint of size 0 must have the root of the empty tree")
            # Also refuses a non-empty proof from size 0 and another root at the recorded size (422).
            verify_consistency(recorded_size, size, recorded_root, root, proof)
        except ProofError as exc:
            log.warning(
                "log %r signed a checkpoint inconsistent with the recorded one (%d, %s): size %d root %s: %s",
                origin, recorded_size, recorded_root.hex(), size, root.hex(), exc.message,
            )  # fmt: skip
            raise _refuse(
                422, f"the checkpoint is not consistent with the recorded one: {exc.message}"
            ) from None
        if not self._swap(origin, recorded, size, root):
            now = self.recorded(origin)
            now_size = now[0] if now is not None else 0
            raise _Refusal(Reply(409, f"{now_size}\n".encode("ascii"), SIZE_CONTENT_TYPE))
        timestamp = max(1, int(self._clock()))
        line = cosignature.sign_line(parsed.text, self.name, self._key, timestamp)
        log.info("cosigned %r at size %d", origin, size)
        return Reply(200, line.encode("utf-8"))

    def _swap(self, origin: str, recorded: tuple[int, bytes] | None, size: int, root: bytes) -> bool:
        """Record (size, root) for `origin` if the record is still `recorded`; False if it moved."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with database_errors():
            try:
                with self.engine.begin() as conn:
                    if recorded is None:
                        conn.execute(
                            insert(WitnessCheckpoint).values(
                                origin=origin, size=size, root=root, updated_at=stamp
                            )
                        )
                        return True
                    result = conn.execute(
                        update(WitnessCheckpoint)
                        .where(
                            WitnessCheckpoint.origin == origin,
                            WitnessCheckpoint.size == recorded[0],
                            WitnessCheckpoint.root == recorded[1],
                        )
                        .values(size=size, root=root, updated_at=stamp)
                    )
                    return result.rowcount == 1
            except IntegrityError:
                return False  # another request recorded this origin first


def parse_request(body: bytes) -> tuple[int, list[bytes], str]:
    """The old size, consistency proof and note of an add-checkpoint body; _Refusal(400/413) if it is
    not one (tlog-witness, "add-checkpoint": old size line, proof lines, empty line, checkpoint)."""
    if len(body) > MAX_REQUEST_BYTES:
        raise _refuse(413, f"request body is over {MAX_REQUEST_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(400, "request body is not UTF-8") from None
    head, blank, note = text.partition("\n\n")
    if not blank:
        raise _refuse(400, "request has no empty line before the checkpoint")
    lines = head.split("\n")
    match = _OLD_LINE.fullmatch(lines[0])
    if match is None or int(match.group(1)) > _U64_MAX:
        raise _refuse(400, "the first line is not `old <size>` (a decimal without leading zeros)")
    old_size = int(match.group(1))
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise _refuse(
            400, f"{len(proof_lines)} consistency proof lines; at most {MAX_PROOF_LINES} are allowed"
        )
    proof: list[bytes] = []
    for number, line in enumerate(proof_lines, start=2):
        node = notes.strict_b64decode(line)
        if node is None or len(node) != HASH_SIZE:
            raise _refuse(400, f"line {number} is not the base64 of a {HASH_SIZE}-byte hash")
        proof.append(node)
    return old_size, proof, note


# -- HTTP -------------------------------------------------------------------------------------------


def build_app(service: WitnessService) -> Starlette:
    """The ASGI app: POST /add-checkpoint (other paths 404, other methods 405, from Starlette)."""

    async def add_checkpoint(request: Request) -> Response:
        try:
            with anyio.fail_after(BODY_TIMEOUT):
                body = await _read_body(request)
        except TimeoutError:
            return _response(Reply.text(408, "request body not received in time"))
        except _Refusal as refusal:
            return _response(refusal.reply)
        try:
            reply = await anyio.to_thread.run_sync(service.add_checkpoint, body)
        except BackendUnavailable as exc:
            log.error("add-checkpoint: %s", exc.message)
            reply = Reply.text(503, "the witness's database is unavailable; try again shortly")
        return _response(reply)

    return Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"])])


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise _refuse(413, f"request body is over {MAX_REQUEST_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise _refuse(413, f"request body is over {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _response(reply: Reply) -> Response:
    # The Content-Type header is set as is: Starlette would add "; charset=utf-8" to a text/* media
    # type, and a 409 "MUST have a Content-Type of text/x.tlog.size".
    return Response(reply.body, status_code=reply.status, headers={"content-type": reply.content_type})


# -- configuration and keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class WitnessConfig:
    path: Path
    name: str
    key_file: Path
    database: str
    logs: tuple[LogKey, ...]


def load_config(path: Path) -> WitnessConfig:
    """Read a witness configuration (module docs); PolicyError for a malformed one, NotFound if absent."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise NotFound(f"no witness configuration at {path}") from None
    except OSError as exc:
        raise PolicyError(f"cannot read the witness configuration {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise PolicyError(f"witness configuration is over {MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"witness configuration is not TOML: {exc}") from None
    unknown = set(data) - {"name", "key_file", "database", "log"}
    if unknown:
        raise PolicyError(f"unknown settings in the witness configuration: {', '.join(sorted(unknown))}")
    name = _string(data, "name")
    try:
        cosignature._check_name(name)
    except ValueError as exc:
        raise PolicyError(f"name: {exc}", field="name") from None
    base = path.parent
    key_file = base / _string(data, "key_file")
    database = data.get("database", f"sqlite:///{(base / 'witness.sqlite').resolve()}")
    if not isinstance(database, str) or not database:
        raise PolicyError("database must be a database URL", field="database")
    entries = data.get("log", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PolicyError("log must be an array of tables ([[log]])", field="log")
    logs: list[LogKey] = []
    seen: set[bytes] = set()
    for position, entry in enumerate(entries, start=1):
        where = f"log[{position}]"
        if set(entry) - {"vkey", "origin"}:
            raise PolicyError(
                f"unknown settings: {', '.join(sorted(set(entry) - {'vkey', 'origin'}))}", field=where
            )
        try:
            key_name, key = cosignature.parse_vkey(_string(entry, "vkey", where))
        except KeyStoreError as exc:
            raise PolicyError(exc.message, field=f"{where}.vkey") from None
        origin = entry.get("origin", key_name)
        if not isinstance(origin, str) or not origin or "\n" in origin:
            raise PolicyError("origin must be a one-line string", field=f"{where}.origin")
        if key.public_bytes_raw() in seen:
            raise PolicyError("the same public key is listed twice", field=where)
        seen.add(key.public_bytes_raw())
        logs.append(LogKey(origin, key_name, key))
    if not logs:
        raise PolicyError("the witness configuration lists no [[log]]")
    return WitnessConfig(path=path, name=name, key_file=key_file, database=database, logs=tuple(logs))


def _string(data: dict[str, Any], key: str, where: str | None = None) -> str:
    value = data.get(key)
    label = f"{where}.{key}" if where else key
    if not isinstance(value, str) or not value:
        raise PolicyError(f"{label} must be a non-empty string", field=label)
    return value


def load_or_create_key(path: Path) -> MLDSA44PrivateKey:
    """The witness's ML-DSA-44 key from a PKCS#8 PEM file; generated (mode 0600, never overwriting)
    when the file is absent. KeyStoreError for a file others may read, or that holds another kind of
    key or an encrypted one."""
    try:
        data = read_private_key_file(path, "absent")
    except NotFound:
        key = MLDSA44PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use that one
            data = read_private_key_file(path, f"witness key file {path.name} vanished")
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(path, 0o600)
            log.warning("generated a new witness key in %s", path)
            return key
    if b"ENCRYPTED" in data[:64]:
        raise KeyStoreError(f"witness key file {path.name} is encrypted; witness keys are not")
    try:
        loaded = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(f"witness key file {path.name} is not a PKCS#8 PEM private key") from exc
    if not isinstance(loaded, MLDSA44PrivateKey):
        raise KeyStoreError(f"witness key file {path.name} holds a {type(loaded).__name__}, not ML-DSA-44")
    return loaded


def open_service(config: WitnessConfig, engine: Engine | None = None) -> WitnessService:
    """The witness of `config`: its key (made if absent), its database (migrated; the witness table
    comes from migration 0005), its logs. BackendUnavailable when the schema has no witness table."""
    key = load_or_create_key(config.key_file)
    if engine is None:
        engine = open_engine(config.database, durable=True)
    with database_errors():
        has_table = inspect(engine).has_table(WitnessCheckpoint.__tablename__)
    if not has_table:
        raise BackendUnavailable(
            f"the database has no {WitnessCheckpoint.__tablename__} table; this version of the schema "
            "predates the witness (migration 0005)"
        )
    return WitnessService(config.name, key, config.logs, engine)
