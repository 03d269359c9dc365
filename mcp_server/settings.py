"""All configuration in one place: `Settings`, read from `MACROSLOW_*` variables and `.env`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mcp_server.crypto.mldsa import DEFAULT_ALGORITHM, Algorithm

MiB = 1024 * 1024


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
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'ledger.db'}"

    def passphrase_bytes(self) -> bytes | None:
        if self.key_passphrase is None or not self.key_passphrase.get_secret_value():
            return None
        return self.key_passphrase.get_secret_value().encode("utf-8")
