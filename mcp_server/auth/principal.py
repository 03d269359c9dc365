"""Who is calling: the `Principal` every policy decision is made about."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """A verified caller. `sub` is unique per `issuer`; `agent://<sub>` is how documents name it."""

    sub: str
    issuer: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)
    token_id: str | None = None
    client_id: str | None = None
    expires_at: int | None = None
    local: bool = False  # the configured local principal (stdio without a token, or HTTP with --no-auth)

    @property
    def uri(self) -> str:
        return f"agent://{self.sub}"

    def describe(self) -> dict[str, object]:
        """What may appear in logs and receipts: identifiers, never the token."""
        return {
            "sub": self.sub,
            "issuer": self.issuer,
            "token_id": self.token_id,
            "scopes": sorted(self.scopes),
        }
