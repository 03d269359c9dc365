"""The upstream client, built from settings: `openai.AsyncOpenAI` or `openai.AsyncAzureOpenAI`.

Credentials come only from the server's settings (an API key, or for Azure, Entra ID through
azure-identity's bearer token provider); nothing of the caller's request reaches the client. The
SDK's own retries are off (`max_retries=0`): `upstream.py` retries, bounded, honouring Retry-After.
`openai` is imported when the first client is built, not when the server starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mcp_server.errors import BackendUnavailable, Forbidden, InvalidDocument
from mcp_server.settings import Settings

if TYPE_CHECKING:
    from openai import AsyncOpenAI

CONNECT_TIMEOUT_SECONDS = 5.0
Provider = Literal["openai", "azure"]


@dataclass(frozen=True)
class Backend:
    """Which upstream answers, and with what: enough to build the client and name it in cache keys."""

    provider: Provider
    endpoint: str | None  # OpenAI: base URL (None: the SDK's default); Azure: the resource endpoint
    default_model: str | None
    allowed_models: frozenset[str]

    @property
    def identity(self) -> str:
        """Provider and endpoint, for cache keys (no credentials)."""
        return f"{self.provider} {self.endpoint or 'default'}"

    def model(self, requested: str | None) -> str:
        """The model (Azure: deployment) a call uses: the default, or one of the allowed ones."""
        model = requested or self.default_model
        if model is None:
            raise InvalidDocument(
                "name a deployment in `model`, or set MACROSLOW_AZURE_OPENAI_DEPLOYMENT", field="model"
            )
        if model != self.default_model and model not in self.allowed_models:
            offered = sorted({m for m in (self.default_model, *self.allowed_models) if m})
            raise Forbidden(
                f"model {model[:64]!r} is not offered by this server; it offers {', '.join(offered)}",
                model=model[:64],
            )
        return model


def backend_of(settings: Settings) -> Backend:
    """The configured backend, or `BackendUnavailable` when none is configured."""
    provider = settings.llm_provider
    if provider == "auto":
        provider = "azure" if settings.azure_openai_endpoint else "openai"
    allowed = frozenset(settings.llm_models)
    if provider == "azure":
        if not settings.azure_openai_endpoint:
            raise BackendUnavailable(
                "Azure OpenAI is not configured on this server (set MACROSLOW_AZURE_OPENAI_ENDPOINT)"
            )
        return Backend("azure", settings.azure_openai_endpoint, settings.azure_openai_deployment, allowed)
    if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
        raise BackendUnavailable(
            "query_openai is not configured on this server (set OPENAI_API_KEY, or an Azure OpenAI endpoint)"
        )
    return Backend("openai", settings.openai_base_url, settings.openai_model, allowed)


def build_client(
    settings: Settings, backend: Backend, credential: Any | None = None
) -> tuple[AsyncOpenAI, Any]:
    """The SDK client, and the Azure credential it owns (to close with it; None otherwise).

    For Azure without an API key, `credential` (an azure-identity async credential; default
    `DefaultAzureCredential()`) supplies Entra ID tokens through `get_bearer_token_provider`.
    """
    import httpx2
    from openai import AsyncAzureOpenAI, AsyncOpenAI

    timeout = httpx2.Timeout(
        settings.llm_timeout_seconds, connect=min(CONNECT_TIMEOUT_SECONDS, settings.llm_timeout_seconds)
    )
    common: dict[str, Any] = {"timeout": timeout, "max_retries": 0}
    if backend.provider == "openai":
        assert settings.openai_api_key is not None
        return (
            AsyncOpenAI(
                api_key=settings.openai_api_key.get_secret_value(),
                base_url=backend.endpoint,
                **common,
            ),
            None,
        )
    assert backend.endpoint is not None
    azure: dict[str, Any] = {
        "azure_endpoint": backend.endpoint,
        "api_version": settings.azure_openai_api_version,
    }
    owned = None
    key = settings.azure_openai_api_key
    if key is not None and key.get_secret_value():
        azure["api_key"] = key.get_secret_value()
    else:
        from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

        if credential is None:
            credential = owned = DefaultAzureCredential()
        azure["azure_ad_token_provider"] = get_bearer_token_provider(
            credential, settings.azure_openai_token_scope
        )
    return AsyncAzureOpenAI(**azure, **common), owned
