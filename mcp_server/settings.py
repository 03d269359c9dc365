"""All configuration in one place: `Settings`, read from `MACROSLOW_*` variables and `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mcp_server.crypto.mldsa import DEFAULT_ALGORITHM, Algorithm
from mcp_server.policy.operations import ALL_SCOPES

MiB = 1024 * 1024

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


def served_url(host: str, port: int) -> str:
    """The MCP endpoint URL of a server bound to `host`:`port` (an IPv6 address in brackets)."""
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{name}:{port}/mcp"


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

    # -- serving many (see docs/deploy.md) ---------------------------------------------------------
    log_format: Literal["text", "json"] = Field(default="text", description="json: one object per line.")
    workers: int = Field(default=1, ge=1, le=64, description="HTTP worker processes (uvicorn workers).")
    metrics_public: bool = Field(
        default=False, description="Serve /metrics to any client; default only to loopback clients."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Browser origins allowed by CORS; default none (CORS off)."
    )
    request_timeout_seconds: float = Field(
        default=300.0, gt=0, description="An HTTP MCP request still running after this is ended (504)."
    )
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A connection without a complete request head this long after opening or after the "
        "previous response is closed (408).",
    )
    http_keep_alive_seconds: int = Field(
        default=5, ge=1, description="An idle kept-alive HTTP connection is closed after this."
    )
    http_body_timeout_seconds: float = Field(
        default=60.0, gt=0, description="An MCP request body not received in full within this gets 408."
    )
    http_max_connections: int = Field(
        default=256,
        ge=1,
        description="Open HTTP connections per process; when full a waiting connection of the heaviest "
        "peer makes room, else 503.",
    )
    http_max_connections_per_peer: int = Field(
        default=64,
        ge=0,
        description="Open HTTP connections per client IPv4 address or IPv6 /64, per process; 0: no cap "
        "(behind a proxy).",
    )
    cpu_workers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Threads for CPU-heavy work (parsing, signing, verifying, sealing, listing workflows), "
        "off the event loop; more such calls at once wait for a free one.",
    )

    # -- who is calling ------------------------------------------------------------------------
    resource_url: str = Field(
        default="",
        description="This server's public MCP URL (RFC 9728 `resource`, and the token audience unless "
        "`audience` is set); default: http://<host>:<port>/mcp of the address served (serve's --host and "
        "--port). Set it when clients reach the server at another address (a proxy, TLS, a DNS name).",
    )
    audience: str | None = Field(
        default=None, description="The `aud` tokens must carry; default: resource_url."
    )
    website_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s\"<>]+$",
        description="A web page about this server, given to clients in serverInfo.websiteUrl; default none.",
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
    rate_sync_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="Each process decides the call rate in memory and reconciles it through the database "
        "this often; several processes may overshoot a shared limit by a bounded amount (docs/security.md).",
    )
    llm_token_budget: int = Field(default=200_000, ge=0, description="LLM tokens per principal per period.")
    llm_budget_period_seconds: int = Field(default=86_400, ge=60)

    # -- quantum: local simulator -------------------------------------------------------------
    quantum_workers: int = Field(
        default=2, ge=1, le=64, description="Local simulator worker processes (jobs running at once)."
    )
    quantum_max_queued: int = Field(default=64, ge=1, description="Local jobs waiting for a worker, at most.")
    quantum_memory_mb: int | None = Field(
        default=None,
        ge=16,
        description="Memory one statevector may take; default half of the memory available at start.",
    )
    quantum_wait_seconds: float = Field(
        default=4.0,
        ge=0,
        description="How long run_quantum_circuit waits inline unless told otherwise; under common client "
        "timeouts (the OpenAI Agents SDK's is 5 s).",
    )
    quantum_max_wait_seconds: float = Field(default=120.0, ge=0, description="Cap on wait_seconds.")
    quantum_job_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="A local job still running after this is stopped (failed)."
    )
    quantum_heartbeat_seconds: float = Field(
        default=2.0, gt=0, description="Running local jobs are marked alive this often (several processes)."
    )
    quantum_mps_max_bond_dimension: int | None = Field(
        default=None, ge=2, description="Truncate matrix-product-state runs at this bond (approximate)."
    )
    task_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="The polling interval a task suggests to its client (pollIntervalMs); an Azure job's is "
        "at least azure_poll_initial_seconds.",
    )
    job_retention_seconds: float = Field(
        default=7 * 86_400,
        ge=0,
        description="Finished jobs are deleted this long after they ended (their receipts stay); 0: kept.",
    )

    # -- quantum: Azure Quantum ---------------------------------------------------------------
    # The workspace: a resource id, or subscription + resource group + name; plus its location.
    # The seeds' variable names (AZURE_SUBSCRIPTION_ID, ...) are read as well.
    azure_quantum_resource_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MACROSLOW_AZURE_QUANTUM_RESOURCE_ID", "AZURE_QUANTUM_RESOURCE_ID"),
    )
    azure_subscription_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MACROSLOW_AZURE_SUBSCRIPTION_ID", "AZURE_SUBSCRIPTION_ID"),
    )
    azure_resource_group: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MACROSLOW_AZURE_RESOURCE_GROUP", "AZURE_RESOURCE_GROUP"),
    )
    azure_quantum_workspace: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MACROSLOW_AZURE_QUANTUM_WORKSPACE", "AZURE_QUANTUM_WORKSPACE"),
    )
    azure_quantum_location: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MACROSLOW_AZURE_QUANTUM_LOCATION", "AZURE_QUANTUM_LOCATION"),
    )
    azure_quantum_connection_string: SecretStr | None = Field(
        default=None,
        description="Workspace connection string (includes an access key); instead of Entra ID.",
        validation_alias=AliasChoices(
            "MACROSLOW_AZURE_QUANTUM_CONNECTION_STRING", "AZURE_QUANTUM_CONNECTION_STRING"
        ),
    )
    azure_quantum_allow_qpu: bool = Field(
        default=False, description="Allow paid hardware (QPU) targets; simulators only otherwise."
    )
    azure_quantum_timeout_seconds: float = Field(default=30.0, gt=0, description="Per HTTP request to Azure.")
    azure_poll_initial_seconds: float = Field(default=1.0, gt=0, description="First status poll delay.")
    azure_poll_max_seconds: float = Field(default=30.0, gt=0, description="Backoff cap between polls.")

    # -- LLM: OpenAI / Azure OpenAI ------------------------------------------------------------
    # The SDK's own variable names (OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT, ...) and the seeds'
    # AZURE_OPENAI_KEY are read as well. Azure is used when an Azure endpoint is set (provider auto).
    llm_provider: Literal["auto", "openai", "azure"] = Field(
        default="auto", description="auto: Azure OpenAI when an Azure endpoint is set, else OpenAI."
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MACROSLOW_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint; default the SDK's (https://api.openai.com/v1).",
        validation_alias=AliasChoices("MACROSLOW_OPENAI_BASE_URL", "OPENAI_BASE_URL"),
    )
    openai_model: str = Field(default="gpt-4o-mini", description="Model used when a call names none.")
    azure_openai_endpoint: str | None = Field(
        default=None,
        description="https://<resource>.openai.azure.com/",
        validation_alias=AliasChoices("MACROSLOW_AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_ENDPOINT"),
    )
    azure_openai_api_key: SecretStr | None = Field(
        default=None,
        description="Azure OpenAI key; without it, Entra ID (azure-identity's DefaultAzureCredential).",
        validation_alias=AliasChoices(
            "MACROSLOW_AZURE_OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_KEY"
        ),
    )
    azure_openai_api_version: str = Field(
        default="2024-10-21",
        validation_alias=AliasChoices("MACROSLOW_AZURE_OPENAI_API_VERSION", "OPENAI_API_VERSION"),
    )
    azure_openai_deployment: str | None = Field(
        default=None,
        description="Deployment used when a call names none.",
        validation_alias=AliasChoices("MACROSLOW_AZURE_OPENAI_DEPLOYMENT", "AZURE_OPENAI_DEPLOYMENT"),
    )
    azure_openai_token_scope: str = Field(
        default="https://cognitiveservices.azure.com/.default", description="Entra ID token scope."
    )
    llm_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Models (Azure: deployments) callers may name besides the default; others are refused.",
    )
    llm_timeout_seconds: float = Field(default=60.0, gt=0, le=600, description="Per upstream request.")
    llm_max_retries: int = Field(default=2, ge=0, le=10, description="Retries after a 429 or 5xx.")
    llm_retry_max_wait_seconds: float = Field(
        default=20.0, ge=0, description="Longest wait before one retry; a longer Retry-After ends retrying."
    )
    llm_retry_total_seconds: float = Field(default=30.0, ge=0, description="All retry waits of a call.")
    llm_max_request_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Messages and output schema, checked before sending."
    )
    llm_cache_ttl_seconds: int = Field(default=3600, ge=0, description="Response cache lifetime; 0: off.")

    # -- receipts ------------------------------------------------------------------------------
    max_result_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        description="Largest tool result sent inline (JSON bytes); larger parts come as a summary and a "
        "resource link to the rest.",
    )
    ledger_batch_max: int = Field(
        default=256, ge=1, le=10_000, description="Most receipts one integration (one checkpoint) takes."
    )
    ledger_batch_wait: float = Field(
        default=0.0, ge=0, le=1.0, description="Longest the integrator waits for more receipts to batch."
    )
    ledger_cover_seconds: float = Field(
        default=10.0, gt=0, description="Longest a call waits for a checkpoint to cover its receipt."
    )
    witness_policy: Path | None = Field(
        default=None,
        description="A c2sp.org/tlog-policy file: the witnesses the log submits its checkpoints to, and "
        "the quorum; unset: no witnesses.",
    )
    witness_mode: Literal["async", "strict"] = Field(
        default="async",
        description="async: answer once the log signed, witnesses cosign in the background; strict: "
        "answer only once the policy's quorum cosigned.",
    )
    witness_timeout_seconds: float = Field(
        default=5.0, gt=0, le=120, description="Longest wait for one witness's answer."
    )
    receipt_payloads: Literal["none", "redacted"] = Field(
        default="none", description="Store redacted arguments in receipts (default: digests only)."
    )

    @field_validator("local_scopes", "tools", "llm_models", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _words(value)

    _resource_url_derived: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _derive_resource_url(self) -> Settings:
        if not self.resource_url:
            self.__dict__["resource_url"] = served_url(self.host, self.port)
            self._resource_url_derived = True
        return self

    @property
    def resource_url_derived(self) -> bool:
        """True when `resource_url` was not configured but derived from the address served."""
        return self._resource_url_derived

    def served_at(self, host: str, port: int) -> Settings:
        """These settings for a server bound to `host`:`port` (serve's --host/--port): an unset
        `resource_url` (and so the default audience) becomes that address's `/mcp` URL."""
        if not self._resource_url_derived:
            return self
        served = self.model_copy(update={"host": host, "port": port, "resource_url": served_url(host, port)})
        served._resource_url_derived = True
        return served

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
