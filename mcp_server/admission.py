"""`Admission`: what the server knows before its lifespan opens anything — the settings, the token
authority and the policy — and how the caller of a request is identified.

The HTTP layer uses it before any request reaches the SDK (scope gate, 403 `insufficient_scope`);
the adapters use it first thing in every call. It holds no database, key or client: those are the
`Services` the lifespan opens (`mcp_server.services`).
"""

from __future__ import annotations

from typing import Literal

from mcp.server.auth.middleware.auth_context import get_access_token

from mcp_server.auth.principal import Principal
from mcp_server.auth.tokens import PrincipalAccessToken, TokenAuthority
from mcp_server.errors import Unauthenticated
from mcp_server.maml.parser import Limits
from mcp_server.policy.guard import Policy
from mcp_server.settings import Settings

# How callers are identified: "local" (stdio, or HTTP with --no-auth on loopback): the token in
# MACROSLOW_TOKEN if set, else the configured local principal; "bearer" (HTTP): the bearer token the
# SDK verified for this request, and nothing else.
CallerSource = Literal["local", "bearer"]


class Admission:
    def __init__(self, settings: Settings, caller_source: CallerSource = "local") -> None:
        self.settings = settings
        self.caller_source: CallerSource = caller_source
        self.limits = Limits(max_bytes=settings.max_document_bytes, max_depth=settings.max_yaml_depth)
        self.authority = TokenAuthority.from_settings(settings)
        self.policy = Policy(settings, self.limits)

    @property
    def local_principal(self) -> Principal:
        return Principal(
            sub=self.settings.local_subject,
            issuer="local",
            scopes=frozenset(self.settings.local_scopes),
            local=True,
        )

    async def identify(self) -> Principal:
        """The caller of the request being served, or `Unauthenticated`."""
        token = get_access_token()
        if isinstance(token, PrincipalAccessToken) and isinstance(token.principal, Principal):
            return token.principal
        if self.caller_source == "bearer":
            raise Unauthenticated("this request carries no verified bearer token")
        if self.settings.token is not None:
            return await self.authority.verify_async(self.settings.token.get_secret_value())
        return self.local_principal
