"""All configuration in one place: `Settings`, read from `MACROSLOW_*` variables and `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mcp_server.crypto.mldsa import DEFAULT_ALGORITHM, Algorithm

MiB = 1024 * 1024

# Every scope a tool or resource can require (the policy layer maps each tool to one of them).
ALL_SCOPES = (
    "maml:read",
    "maml:sign",
    "quantum:run",
    "quantum:read",
    "openai:query",
    "receipts:read",
    "receipts:audit",  # see every caller's receipts, not only one's own
)
LOCAL_ISSUER = "https://macroslow-mcp.invalid/local-issuer"


class IssuerConfig(BaseModel):
    """One trusted token issuer (an identity provider, or another service minting tokens).

    Keys come from a JWKS URL, PEM files, or an HS256 shared secret; `algorithms` is the explicit
    allow-list, checked against each key's type when the server starts.
    """

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(description="Exact `iss` value, e.g. https://login.microsoftonline.com/<tenant>/v2.0")
    algorithms: list[str] = Field(min_length=1, description="Allowed JWS algorithms, e.g. [RS256].")
    audience: list[str] | None = Field(default=None, description="Accepted `aud` values; default: server's.")
    jwks_url: str | None = None
    public_key_files: list[Path] = Field(default_factory=list, description="PEM public keys (SPKI).")
    hs256_secret: SecretStr | None = Field(default=None, description="Shared secret, at least 32 bytes.")
    tenant_id: str | None = Field(default=None, description="Entra ID: require this `tid` claim.")
    roles_as_scopes: bool = Field(
        default=False, description="Treat app roles (`roles`) named like scopes as scopes (Entra app-only)."
    )


def _words(value: object) -> object:
    """Accept a space- or comma-separated string for list settings, as well as JSON lists."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [w for w in text.replace(",", " ").split() if w]
    return value


class Settings(BaseSettings):
    """Server and CLI settings. Paths left unset derive from `home`."""

    model_config = SettingsConfigDict(
        env_prefix="MACROSLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(default=Path("~/.macroslow"), description="Home directory: keys, trust store, ledger.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default a SQLite file in home."
    )
    workflows_dir: Path | None = Field(default=None, description="Directory served as maml://workflows.")
    keys_dir: Path | None = Field(default=None, description="Signing key pairs (private parts mode 0600).")
    trust_store: Path | None = Field(default=None, description="Directory of trusted public keys.")
    key_passphrase: SecretStr | None = Field(
        default=None, description="Encrypts private keys at rest; without it they are stored unencrypted."
    )
    signing_key_id: str | None = Field(
        default=None, description="Key used by sign_maml; default: home's default."
    )
    signing_algorithm: Algorithm = Field(default=DEFAULT_ALGORITHM, description="Algorithm for new keys.")

    server_name: str = Field(default="macroslow-mcp", description="MCP server name, also gateway://<name>.")
    log_level: str = Field(default="INFO")

    max_document_bytes: int = Field(default=1 * MiB, ge=256, description="Size cap checked before parsing.")
    max_yaml_depth: int = Field(default=8, ge=2, le=64, description="Deepest front matter nesting accepted.")
    max_workflows_listed: int = Field(default=1000, ge=1)

    host: str = Field(default="127.0.0.1", description="Bind address for the HTTP transports.")
    port: int = Field(default=8000, ge=1, le=65535)

    # -- who is calling ------------------------------------------------------------------------
    resource_url: str = Field(
        default="http://127.0.0.1:8000/mcp",
        description="This server's public MCP URL (RFC 9728 metadata); set it when serving elsewhere.",
    )
    audience: str | None = Field(
        default=None, description="The `aud` tokens must carry; default: resource_url. Not derived from port."
    )
    auth_required: bool = Field(default=True, description="HTTP transports require a bearer token.")
    token: SecretStr | None = Field(default=None, description="stdio: the caller's bearer token.")
    local_subject: str = Field(default="local", pattern=r"^[A-Za-z0-9._~@:+\-]{1,128}$")
    local_scopes: Annotated[list[str], NoDecode] = Field(
        default=list(ALL_SCOPES), description="Scopes of the local principal (stdio without a token)."
    )
    trust_local_issuer: bool = Field(default=True, description="Accept tokens from `token mint`.")
    local_issuer: str = Field(default=LOCAL_ISSUER, description="`iss` of tokens `token mint` makes.")
    local_issuer_algorithm: str = Field(default="ML-DSA-65", pattern=r"^(ML-DSA-65|HS256)$")
    issuers: list[IssuerConfig] = Field(default_factory=list, description="Further trusted issuers (JSON).")
    token_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: int = Field(default=3600, ge=60)
    jwks_refetch_cooldown_seconds: int = Field(default=60, ge=1)

    # -- what they may do ----------------------------------------------------------------------
    read_only: bool = Field(default=False, description="Offer only tools that neither sign nor spend.")
    tools: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="Tool allow-list; default: all tools."
    )
    require_signed_execution: bool = Field(
        default=True, description="Executing a workflow needs a valid signature by a trusted key."
    )
    max_qubits: int = Field(default=32, ge=1, le=1000)
    max_shots: int = Field(default=100_000, ge=1)
    max_tokens: int = Field(default=4096, ge=1, description="Cap on max_tokens per LLM request.")
    max_request_bytes: int = Field(
        default=4 * MiB, ge=1024, description="HTTP request body cap (413 before parsing)."
    )
    rate_per_minute: float = Field(default=1200, ge=0, description="Calls per principal per minute; 0: off.")
    rate_burst: int = Field(default=120, ge=1, description="Calls a principal may make at once.")
    llm_token_budget: int = Field(default=200_000, ge=0, description="LLM tokens per principal per period.")
    llm_budget_period_seconds: int = Field(default=86_400, ge=60)

    # -- receipts ------------------------------------------------------------------------------
    checkpoint_every: int = Field(default=256, ge=1, description="Sign a checkpoint every N receipts...")
    checkpoint_seconds: float = Field(default=10.0, gt=0, description="...or when the last is this old.")
    receipt_payloads: Literal["none", "redacted"] = Field(
        default="none", description="Store redacted arguments in receipts (default: digests only)."
    )

    @field_validator("local_scopes", "tools", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _words(value)

    @property
    def expected_audience(self) -> str:
        return self.audience or self.resource_url

    @field_validator("home", "workflows_dir", "keys_dir", "trust_store", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @property
    def workflows_path(self) -> Path:
        return self.workflows_dir or self.home / "workflows"

    @property
    def keys_path(self) -> Path:
        return self.keys_dir or self.home / "keys"

    @property
    def trust_path(self) -> Path:
        return self.trust_store or self.home / "trust"

    @property
    def issuer_path(self) -> Path:
        return self.home / "issuer"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'ledger.db'}"

    def passphrase_bytes(self) -> bytes | None:
        if self.key_passphrase is None or not self.key_passphrase.get_secret_value():
            return None
        return self.key_passphrase.get_secret_value().encode("utf-8")
