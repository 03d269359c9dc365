"""The `macroslow-mcp` command line. The only place in the project that prints to stdout or exits.

Errors are one line on stderr (`macroslow-mcp: <code>: <message>`) with a non-zero exit code:
1 for a failed check (invalid signature or document), 2 for usage and I/O errors.

`serve` (every transport, any number of workers) exits 0 after a clean shutdown, on SIGTERM or
SIGINT or (stdio) when the client closes stdin, and 1 when the shutdown was not clean: a service
failed to close, or (HTTP) uvicorn was forced to exit by a second SIGINT, or (`--workers N`) a
worker did not exit 0 (`mcp_server.services.ServiceHost.closed_cleanly`,
`mcp_server.http_app.serve_http`). The log's last line says "shutdown complete" or "shutdown
incomplete". 3 is uvicorn's: the services could not be opened at start.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from mcp_server import __version__

PROG = "macroslow-mcp"
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = code


def _settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from mcp_server.settings import Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "home", None):
        overrides["home"] = Path(args.home)
    if getattr(args, "read_only", False):
        overrides["read_only"] = True
    if getattr(args, "tool", None):
        overrides["tools"] = args.tool
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"configuration: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


SMALL_FILE = 65_536  # key files and detached signatures


def _read(path: str, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them: reading stops at `limit` + 1 bytes (a
    device such as /dev/zero, or a file that grows, is never read whole) and more is refused."""
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise CliError(f"cannot read {path}: not a regular file")
            data = fh.read(limit + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise CliError(f"request_too_large: {path} is larger than {limit} bytes")
    return data


def _document(args: argparse.Namespace, path: str) -> bytes:
    """A MAML document (or a file to seal), within MACROSLOW_MAX_DOCUMENT_BYTES."""
    return _read(path, _limits(args).max_bytes)


def _write(path: str, data: bytes) -> None:
    """Write through a temporary file and rename, so a failure never leaves half a file."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o777)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def _keys(args: argparse.Namespace) -> Any:
    from mcp_server.home import open_keys

    return open_keys(_settings(args))


def _limits(args: argparse.Namespace) -> Any:
    from mcp_server.maml.parser import Limits

    settings = _settings(args)
    return Limits(max_bytes=settings.max_document_bytes, max_depth=settings.max_yaml_depth)


# -- commands -----------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from mcp_server.home import initialize

    report = initialize(_settings(args))
    print(f"home: {report.home}")
    for item in report.created:
        print(f"  created {item}")
    if not report.created:
        print("  nothing to do: already initialised")
    print(f"default signing key: {report.key_id}")
    if report.new_key and not report.key_encrypted:
        print(
            "  the private key is stored UNENCRYPTED (mode 0600); set MACROSLOW_KEY_PASSPHRASE before "
            "`keys generate` to encrypt new keys at rest"
        )
    return EXIT_OK


def _kem_keys(args: argparse.Namespace) -> Any:
    from mcp_server.home import open_kem_keys

    return open_kem_keys(_settings(args))


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from mcp_server.crypto.mldsa import Algorithm

    if args.kem:
        kem_info = _kem_keys(args).generate()
        state = "encrypted" if kem_info.encrypted else "unencrypted (set MACROSLOW_KEY_PASSPHRASE to encrypt)"
        print(f"generated {kem_info.algorithm} recipient key {kem_info.key_id}: {state}")
        print(kem_info.key_id)
        return EXIT_OK
    keys = _keys(args)
    info = keys.generate(Algorithm(args.algorithm), trust=not args.no_trust)
    if args.default:
        keys.set_default(info.key_id)
    state = "encrypted" if info.encrypted else "unencrypted (set MACROSLOW_KEY_PASSPHRASE to encrypt)"
    print(f"generated {info.algorithm} key {info.key_id}: {state}{', trusted' if info.trusted else ''}")
    print(info.key_id)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _keys(args)
    rows = keys.list()
    if args.json:
        kem_rows = [{**k.__dict__, "trusted": False, "default": False} for k in _kem_keys(args).list()]
        print(json.dumps([{**r.__dict__, "algorithm": r.algorithm.value} for r in rows] + kem_rows, indent=2))
        return EXIT_OK
    for k in _kem_keys(args).list():
        state = ["private" if k.has_private else "public-only", "encrypted" if k.encrypted else ""]
        print(f"{k.key_id}  {k.algorithm}  recipient {' '.join(f for f in state if f)}")
    if not rows:
        print("no keys; run `macroslow-mcp init`")
    for r in rows:
        flags = [
            "default" if r.default else "",
            "private" if r.has_private else "public-only",
            "encrypted" if r.encrypted else "",
            "trusted" if r.trusted else "untrusted",
        ]
        print(f"{r.key_id}  {r.algorithm.value}  {' '.join(f for f in flags if f)}")
    return EXIT_OK


def cmd_keys_export(args: argparse.Namespace) -> int:
    from mcp_server.crypto.keys import check_key_id

    kem_keys = _kem_keys(args)
    if kem_keys.public_key(check_key_id(args.key_id)) is not None:
        pem = kem_keys.export_public(args.key_id)
    else:
        pem = _keys(args).export_public(args.key_id)
    if args.output:
        _write(args.output, pem)
    else:
        sys.stdout.write(pem.decode("ascii"))
    return EXIT_OK


def cmd_keys_trust(args: argparse.Namespace) -> int:
    from mcp_server.crypto.keys import load_public_pem

    keys = _keys(args)
    if os.path.exists(args.key):
        public = load_public_pem(_read(args.key, SMALL_FILE))
    else:
        public = keys.public_key(args.key)
        if public is None:
            raise CliError(f"{args.key} is neither a PEM file nor a known key id")
    kid = keys.trust.add(public)
    print(f"trusted {kid}")
    return EXIT_OK


def cmd_keys_import(args: argparse.Namespace) -> int:
    from mcp_server.crypto.kem import load_public_pem

    kid = _kem_keys(args).add_public(load_public_pem(_read(args.file, SMALL_FILE)))
    print(f"imported recipient key {kid}")
    return EXIT_OK


def cmd_keys_untrust(args: argparse.Namespace) -> int:
    _keys(args).trust.remove(args.key_id)
    print(f"untrusted {args.key_id}")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    from mcp_server.signing import sign_detached, sign_document

    data = _document(args, args.file)
    keys, limits = _keys(args), _limits(args)
    if args.detached:
        sig = sign_detached(data, keys, key_id=args.key, limits=limits)
        out = args.output or args.file + ".sig"
        _write(out, (json.dumps(sig, indent=2) + "\n").encode("utf-8"))
        print(f"signed {args.file} with {sig['algorithm']} key {sig['key_id']}: detached signature in {out}")
        return EXIT_OK
    signed = sign_document(data, keys, key_id=args.key, limits=limits)
    out = args.output or args.file
    _write(out, signed.signed_document.encode("utf-8"))
    print(f"signed {args.file} with {signed.algorithm} key {signed.key_id} ({signed.digest}) -> {out}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from mcp_server.signing import inspect_signature

    data = _document(args, args.file)
    sig_path = args.signature
    if sig_path is None and os.path.exists(args.file + ".sig"):
        from mcp_server.maml import parser

        try:
            embedded = parser.parse(data, _limits(args)).front_matter.signature is not None
        except Exception:
            embedded = True  # let inspect_signature explain what is wrong with the document
        sig_path = None if embedded else args.file + ".sig"
    detached = _read(sig_path, SMALL_FILE) if sig_path else None
    report = inspect_signature(data, _keys(args), detached=detached, limits=_limits(args))
    if args.json:
        print(json.dumps(report.__dict__, indent=2))
    ok = report.valid and (report.trusted or args.allow_untrusted)
    if not args.json:
        if ok:
            trust = "trusted" if report.trusted else "NOT trusted"
            print(f"valid: {args.file} signed by {report.algorithm} key {report.key_id} ({trust})")
        else:
            print(f"INVALID: {args.file}")
            for reason in report.reasons:
                print(f"  - {reason}")
    return EXIT_OK if ok else EXIT_INVALID


def cmd_seal(args: argparse.Namespace) -> int:
    from mcp_server.crypto.kem import load_public_pem
    from mcp_server.sealing import resolve_recipients, seal

    kem_keys = _kem_keys(args)
    recipients = []
    for key in args.to:
        if os.path.exists(key):
            recipients.append(load_public_pem(_read(key, SMALL_FILE)))
        else:
            recipients += resolve_recipients([key], kem_keys, _keys(args))
    sealed = seal(_document(args, args.file), recipients, limits=_limits(args))
    out = args.output or args.file + ".sealed"
    _write(out, sealed.encode("ascii"))
    ids = ", ".join(r.key_id for r in recipients)
    print(f"sealed {args.file} for {ids} (AES-256-GCM, key wrapped with ML-KEM-768+X25519) -> {out}")
    return EXIT_OK


def cmd_open(args: argparse.Namespace) -> int:
    from mcp_server.sealing import max_sealed_bytes, open_sealed
    from mcp_server.signing import inspect_signature

    limits = _limits(args)
    opened = open_sealed(_read(args.file, max_sealed_bytes(limits.max_bytes)), _kem_keys(args), limits=limits)
    if args.output:
        _write(args.output, opened.document.encode("utf-8"))
    else:
        sys.stdout.write(opened.document)
    report = inspect_signature(opened.document, _keys(args), limits=_limits(args))
    if not report.signed:
        note = "unsigned"
    elif report.valid:
        note = f"signed by {report.key_id} ({'trusted' if report.trusted else 'NOT trusted'})"
    else:
        note = "signature INVALID: " + "; ".join(report.reasons)
    where = f" -> {args.output}" if args.output else ""
    print(
        f"opened {args.file} with recipient key {opened.key_id}: {opened.parsed.id}, {note}{where}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from mcp_server.errors import InvalidDocument
    from mcp_server.maml import parser

    data = _document(args, args.file)
    try:
        doc = parser.parse(data, _limits(args))
    except InvalidDocument as exc:
        print(f"invalid: {args.file}: {exc.message}")
        return EXIT_INVALID
    signed = "signed" if doc.front_matter.signature else "unsigned"
    print(f"valid: {args.file}: {doc.front_matter.type.value} {doc.id} ({signed})")
    return EXIT_OK


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_serve(args: argparse.Namespace) -> int:
    # Start-up allocates much and frees little: no cyclic garbage collection until the services are
    # open (then what start-up made is frozen out of later collections), so the handshake is not
    # slowed by collections that would find nothing (bench/coldstart.py).
    gc.disable()
    from mcp_server.admission import CallerSource
    from mcp_server.auth.tokens import ConfigurationError
    from mcp_server.logs import configure
    from mcp_server.server import build_server

    settings = _settings(args)
    configure(settings.log_format, logging.DEBUG if args.verbose else settings.log_level.upper())
    host = args.host or settings.host
    port = args.port or settings.port
    authenticated = settings.auth_required and not args.no_auth
    if args.transport != "stdio" and not authenticated and host not in LOOPBACK:
        raise CliError(f"refusing to serve HTTP without authentication on {host}: bind to 127.0.0.1")
    source: CallerSource = "bearer" if args.transport != "stdio" and authenticated else "local"
    if args.transport != "stdio":  # an unset MACROSLOW_RESOURCE_URL: the address served (stdio: unchanged)
        from mcp_server.http_app import resource_notice

        settings = settings.served_at(host, port)
        if source == "bearer":  # one line on stderr (the log), never stdout
            logging.getLogger(PROG).log(*resource_notice(settings, host))
    try:
        server = build_server(settings, caller_source=source)
    except ConfigurationError as exc:
        gc.enable()
        raise CliError(f"configuration: {exc}") from None
    server.host.after_first_open.append(_collect_from_now_on)
    if args.transport == "stdio":
        code = EXIT_OK if server.serve_stdio() else EXIT_INVALID
        # A thread may still be blocked reading stdin (a signal ended the server, not the client):
        # exit without waiting for it, once the output is out.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    from mcp_server.http_app import serve_http

    if source == "local":
        logging.getLogger(PROG).warning(
            "HTTP without authentication: every caller acts as agent://%s", settings.local_subject
        )
    workers = args.workers or settings.workers
    if workers > 1:  # each worker builds its server from the environment: pass the CLI's choices on
        from mcp_server.home import initialize

        initialize(settings, example=False)  # the signing key is made once, not by each worker
        os.environ["MACROSLOW_HOME"] = str(settings.home)
        os.environ["MACROSLOW_READ_ONLY"] = "true" if settings.read_only else "false"
        if settings.tools is not None:
            os.environ["MACROSLOW_TOOLS"] = " ".join(settings.tools)
    return EXIT_OK if serve_http(server, args.transport, host, port, workers) else EXIT_INVALID


def _collect_from_now_on() -> None:
    gc.freeze()
    gc.enable()


def cmd_token_mint(args: argparse.Namespace) -> int:
    from mcp_server.auth.local_issuer import mint

    settings = _settings(args)
    scopes = args.scope.split() if args.scope is not None else list(settings.local_scopes)
    token = mint(settings, sub=args.sub, scopes=scopes, ttl=args.ttl, roles=args.role or None)
    print(
        f"token for agent://{args.sub} from {settings.local_issuer} ({settings.local_issuer_algorithm}), "
        f"audience {settings.expected_audience}, scopes [{' '.join(scopes)}], valid {args.ttl} s:"
    )
    print(token)
    return EXIT_OK


def _ledger(args: argparse.Namespace) -> Any:
    from mcp_server.db import open_engine
    from mcp_server.home import open_keys
    from mcp_server.ledger.store import Ledger

    settings = _settings(args)
    keys = open_keys(settings) if settings.keys_path.is_dir() else None
    return Ledger(open_engine(settings.database, durable=True), keys)


def cmd_receipts_list(args: argparse.Namespace) -> int:
    from mcp_server.views import ReceiptEntry

    page = _ledger(args).page(
        principal=args.principal,
        tool=args.tool,
        decision=args.decision,
        since=args.since,
        until=args.until,
        limit=args.limit,
        cursor=args.cursor,
    )
    rows = [ReceiptEntry.from_receipt(r, h) for r, h in page.receipts]
    if args.json:
        data = {"receipts": [r.model_dump() for r in rows], "next_cursor": page.next_cursor}
        print(json.dumps(data, indent=2))
        return EXIT_OK
    for r in rows:
        print(f"{r.seq:>7}  {r.created_at}  {r.principal}  {r.tool}  {r.decision}  {r.outcome}  {r.id}")
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")
    return EXIT_OK


def cmd_receipts_show(args: argparse.Namespace) -> int:
    from mcp_server.ledger.receipts import render_mu

    ledger = _ledger(args)
    receipt, leaf = ledger.get(args.receipt_id)
    checkpoint = ledger.latest_checkpoint()
    covering = checkpoint.summary() if checkpoint and checkpoint.size > receipt.seq else None
    sys.stdout.write(render_mu(receipt, leaf_hash=leaf, checkpoint=covering))
    return EXIT_OK


def cmd_receipts_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the log is intact and every receipt is covered by a verified checkpoint; 1 when
    it is tampered or truncated, or (unless --allow-uncovered) when receipts are uncovered or no
    checkpoint exists: those were never acknowledged, and nothing vouches for them yet."""
    ledger = _ledger(args)
    report = ledger.verify()
    if args.policy and report.checkpoints:  # the newest checkpoint must meet the witness quorum
        from mcp_server.errors import MacroslowError

        latest = ledger.latest_checkpoint()
        note = ledger.cosigned(latest) if latest is not None else ""
        try:
            _policy(args.policy).check(note, ledger.origin)
        except MacroslowError as exc:
            report.problems.append(f"the newest checkpoint does not meet the witness policy: {exc.message}")
    pending = report.uncovered + report.queued
    covered = report.ok and (args.allow_uncovered or (report.checkpoints > 0 and pending == 0))
    if args.json:
        print(json.dumps({**report.__dict__, "ok": report.ok, "covered": covered}, indent=2))
    elif report.ok:
        print(
            f"ok: {report.receipts} receipts, {report.checkpoints} signed checkpoints; "
            f"receipts 0..{report.verified_size - 1} covered by a verified checkpoint"
            if report.verified_size
            else f"ok: {report.receipts} receipts, no signed checkpoint"
        )
        if report.uncovered:
            print(f"  {report.uncovered} receipts past the newest checkpoint are uncovered")
        if report.queued:
            print(f"  {report.queued} receipts are queued, not yet integrated")
        if not covered:
            print(
                "NOT COVERED: the server covers them at its next start (behind a recovery receipt); "
                "--allow-uncovered accepts this"
            )
    else:
        print("LEDGER INVALID")
        if report.first_bad_seq is not None:
            print(f"  first bad receipt: {report.first_bad_seq}")
        for problem in report.problems:
            print(f"  - {problem}")
    return EXIT_OK if covered else EXIT_INVALID


def cmd_receipts_prove(args: argparse.Namespace) -> int:
    if args.tlog_proof and args.consistency:
        raise CliError("--tlog-proof is for an inclusion proof; leave out --consistency")
    if args.output and not args.tlog_proof:
        raise CliError("-o/--output writes a --tlog-proof file; give --tlog-proof too")
    ledger = _ledger(args)
    if args.tlog_proof:
        return _write_tlog_proof(args, ledger)
    if args.consistency:
        old, new = args.consistency
        proof = ledger.consistency(old, new)
        print(json.dumps({"old_size": old, "new_size": new, "proof": [h.hex() for h in proof]}, indent=2))
        return EXIT_OK
    if args.receipt_id is None:
        raise CliError("give a receipt id, or --consistency OLD NEW")
    print(json.dumps(ledger.prove(args.receipt_id), indent=2))
    return EXIT_OK


def _write_tlog_proof(args: argparse.Namespace, ledger: Any) -> int:
    """`receipts prove ID --tlog-proof`: the proof as a c2sp.org/tlog-proof file (docs/receipts.md)."""
    from mcp_server.ledger.proofs import receipt_proof

    if args.receipt_id is None:
        raise CliError("give the id of the receipt to prove")
    receipt, _ = ledger.get(args.receipt_id)
    proved = ledger.prove(args.receipt_id)
    text = receipt_proof(receipt, [bytes.fromhex(h) for h in proved["proof"]], proved["checkpoint"])
    if not args.output:
        sys.stdout.write(text)
        return EXIT_OK
    _write(args.output, text.encode("utf-8"))
    print(
        f"inclusion proof of receipt {receipt.id} (entry {receipt.seq} of {proved['tree_size']}) "
        f"-> {args.output}"
    )
    return EXIT_OK


def cmd_receipts_check_proof(args: argparse.Namespace) -> int:
    """Check a c2sp.org/tlog-proof file offline: against --key, or the keys in the trust store."""
    from mcp_server.crypto import mldsa
    from mcp_server.crypto.keys import load_public_pem
    from mcp_server.ledger.checkpoint import check_key_name
    from mcp_server.ledger.proofs import MAX_PROOF_BYTES, check_proof, parse_proof, signing_key

    if args.origin is not None:
        try:
            check_key_name(args.origin)
        except ValueError as exc:
            raise CliError(f"--origin: {exc}") from None
    text = _read(args.file, MAX_PROOF_BYTES)
    given = load_public_pem(_read(args.key, SMALL_FILE)) if args.key else None
    proof = parse_proof(text)
    key_name = args.origin or proof.claimed_origin()
    if given is None:
        trust = _keys(args).trust
        ids = trust.ids()
        if not ids:
            raise CliError(f"no trusted keys in {trust.path}; give the log's public key with --key PEM_FILE")
        trusted = (trust.get(kid) for kid in ids)
        public = signing_key(proof, key_name, (k for k in trusted if k is not None))
    else:
        public = given
    checked = check_proof(proof, public, key_name)
    cp, receipt, key_id = checked.checkpoint, checked.receipt, mldsa.key_id(public)
    if args.policy:  # the witnesses' quorum too (c2sp.org/tlog-policy)
        _policy(args.policy).check(proof.checkpoint_note, cp.origin)
    if args.json:
        data = {
            "ok": True,
            "index": checked.index,
            "tree_size": cp.size,
            "root": cp.root.hex(),
            "origin": cp.origin,
            "key_id": key_id,
            "receipt": receipt,
        }
        print(json.dumps(data, indent=2))
        return EXIT_OK
    shown = {
        name: _printable(receipt.get(name)) for name in ("id", "tool", "principal", "decision", "outcome")
    }
    print(
        f"ok: receipt {shown['id']}: {shown['tool']} by {shown['principal']}, "
        f"{shown['decision']} ({shown['outcome']})"
    )
    print(f"  entry {checked.index} of {cp.size} in {cp.origin}, checkpoint signed by key {key_id}")
    return EXIT_OK


def _printable(value: Any) -> str:
    """A receipt field for a terminal: printable text as is, anything else as JSON."""
    return value if isinstance(value, str) and value.isprintable() and value else json.dumps(value)


def _policy(path: str) -> Any:
    """A c2sp.org/tlog-policy file (the log's key, witnesses, quorum)."""
    from mcp_server.witness import policy

    return policy.parse(_read(path, SMALL_FILE))


def cmd_receipts_vkey(args: argparse.Namespace) -> int:
    """The log's verifier key (c2sp.org/signed-note vkey, type 0x06): what a witness or a policy file
    needs to check the log's checkpoints."""
    from mcp_server.witness import cosignature

    ledger = _ledger(args)
    public = (
        None
        if ledger.keys is None or ledger.log_key_id is None
        else ledger.keys.public_key(ledger.log_key_id)
    )
    if public is None:
        raise CliError("this ledger has no log key yet: start the server (or record a receipt) once")
    print(cosignature.vkey(ledger.origin, public))
    return EXIT_OK


def cmd_receipts_export(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    if args.checkpoint:
        checkpoint = ledger.latest_checkpoint()
        if checkpoint is None:
            raise CliError("no signed checkpoint yet")
        _write(args.checkpoint, checkpoint.note.encode("utf-8"))
        print(f"checkpoint at size {checkpoint.size} -> {args.checkpoint}")
        return EXIT_OK
    lines = [
        json.dumps({**receipt.content(), "leaf_hash": leaf.hex()}, sort_keys=True)
        for receipt, leaf in ledger.rows()
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    if args.output:
        _write(args.output, data)
        print(f"{len(lines)} receipts -> {args.output}")
    else:
        sys.stdout.write(data.decode("utf-8"))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from mcp_server.demo import run_demo

    return run_demo(sys.stdout, home=Path(args.home) if args.home else None)


def cmd_witness_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mcp_server.logs import configure
    from mcp_server.witness.service import build_app, load_config, open_service

    configure("text", logging.DEBUG if args.verbose else logging.INFO)
    service = open_service(load_config(Path(args.config)))
    logging.getLogger(PROG).warning(
        "witness %s on http://%s:%d/add-checkpoint for %d log(s)",
        service.name, args.host, args.port, len(service.logs),
    )  # fmt: skip
    uvicorn.run(build_app(service), host=args.host, port=args.port, log_config=None, access_log=False)
    return EXIT_OK


def cmd_witness_vkey(args: argparse.Namespace) -> int:
    from mcp_server.witness.cosignature import vkey
    from mcp_server.witness.service import load_config, load_or_create_key

    config = load_config(Path(args.config))
    print(vkey(config.name, load_or_create_key(config.key_file).public_key()))
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    home_help = "home directory (default: $MACROSLOW_HOME or ~/.macroslow)"
    # Subcommands accept --home too; SUPPRESS keeps their unset default from hiding a top-level --home.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help=home_help)

    parser = argparse.ArgumentParser(
        prog=PROG, description="An MCP server for signed MAML workflows (ML-DSA, FIPS 204)."
    )
    parser.add_argument("--home", default=None, help=home_help)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help_: str, **kw: Any
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, parents=[common], **kw)
        p.set_defaults(func=fn)
        return p

    add("init", cmd_init, "create the home: signing key, trust store, workflows, an example workflow")

    keys = sub.add_parser(
        "keys", help="manage ML-DSA signing keys and the trust store", description="Manage keys."
    )
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    def kadd(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = ksub.add_parser(name, help=help_, description=help_, parents=[common])
        p.set_defaults(func=fn)
        return p

    g = kadd("generate", cmd_keys_generate, "generate an ML-DSA key pair (trusted unless --no-trust)")
    g.add_argument("--algorithm", "-a", default="ML-DSA-65", choices=["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"])
    g.add_argument("--default", action="store_true", help="make it the default signing key")
    g.add_argument("--no-trust", action="store_true", help="do not add it to the trust store")
    g.add_argument(
        "--kem", action="store_true", help="generate an ML-KEM-768 + X25519 recipient key for sealing instead"
    )
    lst = kadd("list", cmd_keys_list, "list own and trusted keys")
    lst.add_argument("--json", action="store_true")
    e = kadd("export", cmd_keys_export, "print a public key as PEM")
    e.add_argument("key_id")
    e.add_argument("-o", "--output", help="write to this file instead of stdout")
    t = kadd("trust", cmd_keys_trust, "trust a public key: a PEM file or a known key id")
    t.add_argument("key", metavar="KEY_ID_OR_PEM")
    i = kadd("import", cmd_keys_import, "import a recipient (KEM) public key PEM, to seal for it")
    i.add_argument("file")
    u = kadd("untrust", cmd_keys_untrust, "remove a key from the trust store")
    u.add_argument("key_id")

    s = add("sign", cmd_sign, "sign a MAML file (in place unless -o; --detached writes FILE.sig)")
    s.add_argument("file")
    s.add_argument("-o", "--output")
    s.add_argument("--detached", action="store_true")
    s.add_argument("--key", help="key id (default: the home's default key)")

    v = add(
        "verify", cmd_verify, "verify a MAML file's signature: exit 0 valid and trusted, 1 invalid, 2 error"
    )
    v.add_argument("file")
    v.add_argument(
        "--signature", help="detached signature file (default: FILE.sig when the file is unsigned)"
    )
    v.add_argument(
        "--allow-untrusted", action="store_true", help="exit 0 for a valid signature by an untrusted key"
    )
    v.add_argument("--json", action="store_true", help="print the full report as JSON")

    se = add("seal", cmd_seal, "seal a MAML file for recipient keys (writes FILE.sealed unless -o)")
    se.add_argument("file")
    se.add_argument(
        "--to", action="append", required=True, metavar="KEY", help="recipient key id or PEM file (repeat)"
    )
    se.add_argument("-o", "--output")
    op = add("open", cmd_open, "open a sealed file with this home's recipient key (stdout unless -o)")
    op.add_argument("file")
    op.add_argument("-o", "--output")

    val = add("validate", cmd_validate, "check a MAML file's form and safety (no signature check)")
    val.add_argument("file")

    srv = add("serve", cmd_serve, "run the MCP server; logs go to stderr")
    srv.add_argument("--transport", "-t", default="stdio", choices=["stdio", "streamable-http", "sse"])
    srv.add_argument("--host", help="bind address for HTTP transports (default 127.0.0.1)")
    srv.add_argument("--port", type=int, help="port for HTTP transports (default 8000)")
    srv.add_argument(
        "--no-auth",
        action="store_true",
        help="HTTP without bearer tokens: every caller is the local principal; loopback binds only",
    )
    srv.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="HTTP worker processes sharing the database (default MACROSLOW_WORKERS or 1)",
    )
    srv.add_argument("--read-only", action="store_true", help="offer only tools that neither sign nor spend")
    srv.add_argument("--tool", action="append", metavar="NAME", help="offer only this tool (repeatable)")

    tok = sub.add_parser("token", help="development access tokens", description="Development tokens.")
    tsub = tok.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    m = tsub.add_parser(
        "mint",
        help="print a token from the local issuer (last line of stdout)",
        description="Mint an access token from the home's local issuer key, for this server's audience.",
        parents=[common],
    )
    m.set_defaults(func=cmd_token_mint)
    m.add_argument("--sub", required=True, help="subject: the token names agent://SUB")
    m.add_argument(
        "--scope", help='space-separated scopes (default: MACROSLOW_LOCAL_SCOPES), e.g. "maml:read"'
    )
    m.add_argument("--role", action="append", help="an app role (repeatable)")
    m.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")

    rec = sub.add_parser("receipts", help="the receipts ledger", description="The receipts ledger.")
    rsub = rec.add_subparsers(dest="receipts_command", metavar="ACTION", required=True)

    def radd(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = rsub.add_parser(name, help=help_, description=help_, parents=[common])
        p.set_defaults(func=fn)
        return p

    rl = radd("list", cmd_receipts_list, "list receipts, newest first")
    rl.add_argument("--principal", help="agent://<sub>")
    rl.add_argument("--tool")
    rl.add_argument("--decision", choices=["allowed", "denied"])
    rl.add_argument("--since", help="ISO 8601 UTC, inclusive")
    rl.add_argument("--until", help="ISO 8601 UTC, exclusive")
    rl.add_argument("--limit", type=int, default=50)
    rl.add_argument("--cursor")
    rl.add_argument("--json", action="store_true")
    rs = radd("show", cmd_receipts_show, "print one receipt as a .mu Markdown document")
    rs.add_argument("receipt_id")
    rv = radd(
        "verify",
        cmd_receipts_verify,
        "recompute the whole log against its signed checkpoints: exit 0 intact and covered, 1 tampered, "
        "truncated, or with receipts no checkpoint covers",
    )
    rv.add_argument("--json", action="store_true")
    rv.add_argument(
        "--allow-uncovered",
        action="store_true",
        help="exit 0 for an intact log even when receipts are uncovered or no checkpoint exists",
    )
    rv.add_argument(
        "--policy",
        metavar="FILE",
        help="also require the newest checkpoint to meet the witness quorum of this tlog-policy file",
    )
    rp = radd("prove", cmd_receipts_prove, "inclusion proof of a receipt (or a consistency proof)")
    rp.add_argument("receipt_id", nargs="?")
    rp.add_argument("--consistency", nargs=2, type=int, metavar=("OLD", "NEW"))
    rp.add_argument(
        "--tlog-proof",
        action="store_true",
        help="write the proof as a c2sp.org/tlog-proof file (stdout unless -o), to check offline",
    )
    rp.add_argument("-o", "--output", metavar="FILE", help="with --tlog-proof: write to FILE (*.tlog-proof)")
    rc = radd(
        "check-proof",
        cmd_receipts_check_proof,
        "check a .tlog-proof file offline: exit 0 it holds, 1 it does not, 2 usage or unreadable file",
    )
    rc.add_argument("file", metavar="FILE")
    rc.add_argument(
        "--key", metavar="PEM_FILE", help="the log's public key (`keys export`); default: the trust store"
    )
    rc.add_argument("--origin", help="require this log origin (default: the one the checkpoint names)")
    rc.add_argument("--json", action="store_true", help="print the receipt and checkpoint as JSON")
    rc.add_argument(
        "--policy", metavar="FILE", help="also require the witness quorum of this c2sp.org/tlog-policy file"
    )
    radd("vkey", cmd_receipts_vkey, "print the log's verifier key (C2SP vkey) for witnesses and policies")
    rx = radd("export", cmd_receipts_export, "write all receipts as JSON lines, or the newest checkpoint")
    rx.add_argument("-o", "--output")
    rx.add_argument("--checkpoint", metavar="FILE", help="write the newest signed checkpoint note to FILE")

    add("demo", cmd_demo, "drive the server over stdio as an agent would and report each step")

    wit = sub.add_parser(
        "witness",
        help="a c2sp.org/tlog-witness server cosigning other logs' checkpoints",
        description="A transparency log witness (ML-DSA-44 cosignatures).",
    )
    wsub = wit.add_subparsers(dest="witness_command", metavar="ACTION", required=True)
    ws = wsub.add_parser(
        "serve",
        help="serve POST /add-checkpoint (uvicorn); logs go to stderr",
        description="Serve POST /add-checkpoint of c2sp.org/tlog-witness.",
        parents=[common],
    )
    ws.set_defaults(func=cmd_witness_serve)
    ws.add_argument("--config", required=True, metavar="FILE", help="the witness's TOML configuration")
    ws.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ws.add_argument("--port", type=int, default=7380, help="port (default 7380)")
    wv = wsub.add_parser(
        "vkey",
        help="print the witness's verifier key (for a log's c2sp.org/tlog-policy file)",
        description="Print the witness's vkey; the key is generated first if absent.",
        parents=[common],
    )
    wv.set_defaults(func=cmd_witness_vkey)
    wv.add_argument("--config", required=True, metavar="FILE", help="the witness's TOML configuration")
    return parser


def _fail(message: str, code: int) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from mcp_server.errors import InvalidDocument, MacroslowError, SignatureInvalid

    try:
        code: int = args.func(args)
    except CliError as exc:
        _fail(str(exc), exc.exit_code)
    except (InvalidDocument, SignatureInvalid) as exc:
        _fail(str(exc), EXIT_INVALID)
    except MacroslowError as exc:
        _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # a bug: one line, not a traceback, unless asked for
        if args.verbose:
            raise
        _fail(
            f"internal_error: unexpected {type(exc).__name__}; rerun with --verbose for the details",
            EXIT_USAGE,
        )
    raise SystemExit(code)
