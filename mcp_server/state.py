"""Process-wide state the tools and resources share, opened by the server's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from mcp_server.crypto.keys import KeyStore
from mcp_server.errors import MacroslowError
from mcp_server.home import initialize, open_keys
from mcp_server.maml.parser import Limits
from mcp_server.settings import Settings
from mcp_server.workflows import WorkflowDirectory

log = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    limits: Limits = field(init=False)
    _keys: KeyStore | None = field(default=None, init=False)
    _workflows: WorkflowDirectory | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.limits = Limits(
            max_bytes=self.settings.max_document_bytes, max_depth=self.settings.max_yaml_depth
        )

    @property
    def keys(self) -> KeyStore:
        if self._keys is None:
            raise MacroslowError("server state is not open (used outside the server lifespan)")
        return self._keys

    @property
    def workflows(self) -> WorkflowDirectory:
        if self._workflows is None:
            raise MacroslowError("server state is not open (used outside the server lifespan)")
        return self._workflows

    @asynccontextmanager
    async def open(self) -> AsyncIterator[AppState]:
        """Make sure the home exists (keys are created on first use), then load keys and trust."""
        report = initialize(self.settings, example=False)
        if report.new_key:
            log.warning(
                "created signing key %s in %s (%s)",
                report.key_id,
                self.settings.keys_path,
                "encrypted"
                if report.key_encrypted
                else "unencrypted: set MACROSLOW_KEY_PASSPHRASE to encrypt",
            )
        self._keys = open_keys(self.settings)
        self._workflows = WorkflowDirectory(
            self.settings.workflows_path, self.limits, self.settings.max_workflows_listed
        )
        try:
            yield self
        finally:
            self._keys = None
            self._workflows = None
