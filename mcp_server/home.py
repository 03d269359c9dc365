"""Creating the home directory: keys, trust store, workflows, and an example workflow.

Idempotent, and it never overwrites a key: `init` run twice changes nothing the second time.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mcp_server.crypto.kem import KemKeyStore
from mcp_server.crypto.keys import KeyStore, TrustStore
from mcp_server.settings import Settings

log = logging.getLogger(__name__)

EXAMPLE_NAME = "ghz.maml.md"


def example_workflow() -> str:
    return resources.files("mcp_server.examples").joinpath(EXAMPLE_NAME).read_text(encoding="utf-8")


def open_keys(settings: Settings) -> KeyStore:
    return KeyStore(
        settings.keys_path,
        TrustStore(settings.trust_path),
        settings.passphrase_bytes(),
        default_key_id=settings.signing_key_id,
    )


def open_kem_keys(settings: Settings) -> KemKeyStore:
    """Recipient (sealing) keys: `<home>/kem`, encrypted at rest with the signing keys' passphrase."""
    return KemKeyStore(settings.home / "kem", settings.passphrase_bytes())


@dataclass
class InitReport:
    home: Path
    created: list[str] = field(default_factory=list)
    key_id: str | None = None
    key_encrypted: bool = False
    new_key: bool = False


def initialize(settings: Settings, *, example: bool = True) -> InitReport:
    """Create what is missing; report what was created. Safe when several processes (servers
    started together on one home) run it at once: they take turns under a lock in the home."""
    with home_lock(settings):
        return _initialize(settings, example=example)


@contextmanager
def home_lock(settings: Settings) -> Iterator[None]:
    """An exclusive lock on the home, for creating keys: processes take turns, none overwrites."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with open(settings.home / ".init.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _initialize(settings: Settings, *, example: bool) -> InitReport:
    report = InitReport(home=settings.home)
    for path in (settings.home, settings.keys_path, settings.trust_path, settings.workflows_path):
        if not path.exists():
            path.mkdir(parents=True, exist_ok=True)
            report.created.append(str(path))
    os.chmod(settings.keys_path, 0o700)
    keys = open_keys(settings)
    kid = keys.stored_default()
    if kid is None and not keys.ids():
        info = keys.generate(settings.signing_algorithm)
        kid = info.key_id
        report.new_key = True
        report.created.append(f"signing key {kid} ({info.algorithm})")
    elif kid is None:
        kid = keys.ids()[0]
        keys.set_default(kid)
    if keys.log_key_id() is None:  # the receipts ledger's checkpoint key (ML-DSA-44)
        report.created.append(f"log key {keys.make_log_key()} (ML-DSA-44)")
    report.key_id = keys.default_key_id() or kid
    report.key_encrypted = keys.info(report.key_id).encrypted
    if example:
        target = settings.workflows_path / EXAMPLE_NAME
        if not target.exists():
            target.write_text(example_workflow(), encoding="utf-8")
            report.created.append(str(target))
    return report
