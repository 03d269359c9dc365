"""Azure Quantum, the remote backend: azure-quantum's Qiskit provider behind `RemoteBackend`.

- `AzureQuantumBackend.from_settings(settings, credential=None)` checks the settings (cheap, no
  import of azure-*); the `azure.quantum.Workspace` is built on first use, in a worker thread,
  because building it imports azure-quantum and qsharp (2 s or so) and, with Entra ID, asks ARM for
  the workspace's endpoint. The workspace comes from the connection string when one is set (API
  key), else from the resource id, or subscription + resource group + workspace name, plus the
  location, with `credential` or `DefaultAzureCredential()` (managed identity, workload identity,
  environment and Azure CLI credentials).
- `check_target` refuses paid hardware unless `azure_quantum_allow_qpu` (no network).
- `submit` runs `provider.get_backend(target).run(circuit, shots=..., job_name=job_id)`: the SDK's
  default backend for the target, which for IonQ, Quantinuum and Rigetti targets is the QIR one
  (the circuit becomes QIR locally with qsharp; results come back as microsoft.quantum-results.v2).
- `status` makes one job request; a succeeded job's results are read and turned into Qiskit counts
  by the SDK's own `AzureQuantumJob.result()`, whatever the target's result format.
- The circuit's `seed` is not sent: Azure targets take none.
- qsharp's usage telemetry (on by default, to Azure Application Insights) is turned off unless
  QDK_PYTHON_TELEMETRY or QSHARP_PYTHON_TELEMETRY is set.

Bounds. Every HTTP request the SDK makes gets `azure_quantum_timeout_seconds` as its connect and
read timeout, and at most one quick retry (connection errors and 408/5xx, after at most 2 s; never
a 429, never a read timeout, never when the service asks to wait longer via Retry-After), so a
throttled or broken service surfaces as `RateLimited`/`BackendUnavailable` within about one timeout
per request instead of the SDK's defaults (azure-core: 10 retries, 300 s timeouts, honouring any
Retry-After; azure-storage-blob: 3 retries 15-60 s apart, 20/60 s timeouts). The job service does
the pacing. The SDK offers no setting for this, so three small seams are used, each falling back to
the SDK's defaults (with a warning) if a later SDK moves them:
  1. the data-plane client: `Workspace._create_client` is overridden to pass `retry_policy`,
     `connection_timeout` and `read_timeout` to `WorkspaceClient` (azure-core pipeline kwargs);
  2. the ARM client (Entra ID path: workspace lookup): `Workspace(_mgmt_client=...)`, the SDK's own
     injection point, gets a `WorkspaceMgmtClient` whose pipeline has the same policy and timeouts;
  3. the blob clients the SDK creates for job input and results (`ContainerClient.from_container_url`
     / `BlobClient.from_blob_url`, no kwargs passed): azure-quantum's module references are replaced
     by subclasses adding the bounds, only for calls made by this adapter (a context variable).

Errors are mapped at one seam (`_map_error`) to `mcp_server.errors`: 401/403 -> BackendUnavailable
(the server's credentials), 404 -> NotFound, 429 or a quota code -> RateLimited (Retry-After, else
the poll cap), 5xx, timeouts, connection errors -> BackendUnavailable. Messages never carry keys,
tokens or upstream text; the Azure error code and HTTP status go in `details`.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio

from mcp_server.errors import (
    BackendUnavailable,
    Forbidden,
    InvalidDocument,
    MacroslowError,
    NotFound,
    RateLimited,
)
from mcp_server.quantum.backends import JobStatus, Outcome, RemoteState, Submission

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from mcp_server.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Azure job states -> ours. Anything unknown is treated as still running (the job service polls on).
_STATUS: dict[str, JobStatus] = {
    "Waiting": JobStatus.queued,
    "Queued": JobStatus.queued,
    "Executing": JobStatus.running,
    "Finishing": JobStatus.running,
    "CancellationRequested": JobStatus.running,
    "Cancelling": JobStatus.running,
    "Succeeded": JobStatus.succeeded,
    "Completed": JobStatus.succeeded,
    "Failed": JobStatus.failed,
    "Cancelled": JobStatus.cancelled,
}

_TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$", re.IGNORECASE)
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CODE = re.compile(r"^[A-Za-z0-9._-]{1,80}$")
_QUOTA_CODE = re.compile(r"quota|throttl|toomanyrequests|ratelimit", re.IGNORECASE)

# One retry at most, quickly; see the module docstring.
RETRY_TOTAL = 1
RETRY_BACKOFF_SECONDS = 0.5
RETRY_BACKOFF_MAX_SECONDS = 2


def is_simulator(target: str) -> bool:
    """Azure target names read `<provider>.<kind>.<device>`: a target is a simulator when its kind
    (second part) is `sim` or `simulator` (`ionq.simulator`, `quantinuum.sim.h2-1e`,
    `rigetti.sim.qvm`, `qci.simulator.noisy`, `pasqal.sim.emu-tn`) or it ends in `.qvm`. Anything
    else counts as paid hardware (`ionq.qpu.aria-1`, `quantinuum.qpu.h2-1`, unknown names): fail
    safe. Note Quantinuum's emulators are not hardware but do draw on the workspace's HQC quota."""
    parts = target.lower().split(".")
    return (len(parts) >= 2 and parts[1] in ("sim", "simulator")) or parts[-1] == "qvm"


def _env(field: str) -> str:
    """The variable names a settings field is read from, e.g. 'MACROSLOW_AZURE_SUBSCRIPTION_ID
    (or AZURE_SUBSCRIPTION_ID)'."""
    from mcp_server.settings import Settings

    alias = Settings.model_fields[field].validation_alias
    choices = [c for c in getattr(alias, "choices", []) if isinstance(c, str)]
    if not choices:
        return f"MACROSLOW_{field.upper()}"
    return choices[0] + (f" (or {', '.join(choices[1:])})" if len(choices) > 1 else "")


def _secret(settings: Settings) -> str | None:
    value = settings.azure_quantum_connection_string
    text = value.get_secret_value().strip() if value is not None else ""
    return text or None


def _missing(settings: Settings) -> list[str]:
    """The settings still needed to name a workspace (empty: configured)."""
    if _secret(settings) or settings.azure_quantum_resource_id:
        return []
    parts = {
        "azure_subscription_id": settings.azure_subscription_id,
        "azure_resource_group": settings.azure_resource_group,
        "azure_quantum_workspace": settings.azure_quantum_workspace,
    }
    if any(parts.values()):
        return [name for name, value in parts.items() if not value]
    return ["azure_quantum_connection_string", "azure_quantum_resource_id", *parts]


@dataclass(frozen=True)
class _Bounds:
    timeout: float  # seconds, per HTTP request: connect and read

    def transport_kwargs(self) -> dict[str, Any]:
        return {"connection_timeout": self.timeout, "read_timeout": self.timeout}


# Set while this adapter's code runs in a worker thread; read by the bounded blob clients.
_STORAGE_BOUNDS: contextvars.ContextVar[_Bounds | None] = contextvars.ContextVar(
    "macroslow_azure_storage_bounds", default=None
)


class AzureQuantumBackend:
    """`RemoteBackend` for Azure Quantum. Thread-safe; the SDK runs in worker threads."""

    name: ClassVar[str] = "azure"

    def __init__(self, settings: Settings, *, credential: TokenCredential | None = None) -> None:
        self.settings = settings
        self._credential = credential
        self._bounds = _Bounds(timeout=float(settings.azure_quantum_timeout_seconds))
        self._lock = threading.Lock()
        self._workspace: Any = None
        self._provider: Any = None
        self._backends: dict[str, Any] = {}
        self._closed = False

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        """Whether the settings name a workspace (connection string, resource id, or subscription +
        resource group + workspace name)."""
        return not _missing(settings)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, credential: TokenCredential | None = None
    ) -> AzureQuantumBackend:
        """The backend for the configured workspace; `BackendUnavailable` naming the variables to
        set when none is. Cheap: nothing is imported or contacted until the first call."""
        missing = _missing(settings)
        if missing and "azure_quantum_connection_string" not in missing:  # a partial workspace name
            raise BackendUnavailable(
                f"Azure Quantum is not fully configured: also set {'; '.join(_env(f) for f in missing)}",
                missing=[_env(f).split(" ")[0] for f in missing],
            )
        if missing:
            raise BackendUnavailable(
                "Azure Quantum is not configured: set "
                f"{_env('azure_quantum_connection_string')}, or {_env('azure_quantum_resource_id')}, or "
                f"{_env('azure_subscription_id')} + {_env('azure_resource_group')} + "
                f"{_env('azure_quantum_workspace')}; and {_env('azure_quantum_location')}. "
                "Without a connection string the server signs in with DefaultAzureCredential "
                "(managed identity, workload identity, AZURE_CLIENT_ID/AZURE_TENANT_ID/"
                "AZURE_CLIENT_SECRET, or the Azure CLI).",
                missing=[_env(f).split(" ")[0] for f in missing],
            )
        return cls(settings, credential=credential)

    def _connect(self) -> Any:
        """The SDK provider for the workspace, built once (in a worker thread)."""
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the Azure Quantum backend is shut down")
            if self._provider is not None:
                return self._provider
            sdk = _sdk()
            _install_storage_bounds()
            settings = self.settings
            connection_string = _secret(settings)
            try:
                if connection_string:
                    workspace = sdk.Workspace.from_connection_string(
                        connection_string, macroslow_bounds=self._bounds
                    )
                else:
                    credential = self._credential
                    if credential is None:
                        from azure.identity import DefaultAzureCredential

                        credential = DefaultAzureCredential()
                    kwargs: dict[str, Any] = {}
                    if settings.azure_quantum_resource_id:
                        kwargs["resource_id"] = settings.azure_quantum_resource_id
                    else:
                        kwargs["subscription_id"] = settings.azure_subscription_id
                        kwargs["resource_group"] = settings.azure_resource_group
                        kwargs["name"] = settings.azure_quantum_workspace
                    if settings.azure_quantum_location:
                        kwargs["location"] = settings.azure_quantum_location
                    workspace = sdk.Workspace(
                        credential=credential,
                        macroslow_bounds=self._bounds,
                        _mgmt_client=sdk.mgmt_client(credential, self._bounds),
                        **kwargs,
                    )
            except ValueError as exc:
                if _find_azure_error(exc) is not None:
                    raise  # an HTTP failure wrapped by the SDK (e.g. ARM 404): mapped by the caller
                # The SDK's own checks of the settings (GUIDs, resource id, region, connection string
                # format); its messages name the problem, never a value.
                reason = _scrub(str(exc), connection_string)
                raise BackendUnavailable(
                    f"Azure Quantum rejected the workspace settings: {reason} (check "
                    f"{_env('azure_quantum_connection_string')}, {_env('azure_quantum_resource_id')}, "
                    f"{_env('azure_quantum_location')})",
                    reason="invalid_settings",
                ) from exc
            self._workspace = workspace
            self._provider = sdk.AzureQuantumProvider(workspace)
            return self._provider

    def _backend(self, target: str) -> Any:
        """The SDK's (default) backend for a target; one target lookup per target and process."""
        provider = self._connect()
        with self._lock:
            cached = self._backends.get(target)
        if cached is not None:
            return cached
        backend = provider.get_backend(target)
        with self._lock:
            self._backends[target] = backend
        return backend

    # -- RemoteBackend -------------------------------------------------------------------------

    def check_target(self, target: str) -> None:
        """Refuse malformed target names, and paid hardware unless `azure_quantum_allow_qpu` (see
        `is_simulator` for the rule). No network: whether the workspace has the target is only
        known at submission (`NotFound` then)."""
        if not _TARGET_NAME.fullmatch(target):
            raise InvalidDocument(f"'{target[:64]}' is not an Azure Quantum target name", field="target")
        if not is_simulator(target) and not self.settings.azure_quantum_allow_qpu:
            raise Forbidden(
                f"Azure Quantum target '{target}' is paid hardware; this server only runs simulators "
                "(set MACROSLOW_AZURE_QUANTUM_ALLOW_QPU=true to allow hardware)",
                target=target,
            )

    async def submit(self, submission: Submission) -> str:
        """Submit the circuit and return Azure's job id (the job runs on; `status` follows it)."""
        self.check_target(submission.target)

        def run() -> str:
            backend = self._backend(submission.target)
            job = backend.run(submission.circuit, shots=submission.shots, job_name=submission.job_id)
            return str(job.id())

        return await self._call("submit", run, target=submission.target)

    async def status(self, remote_id: str) -> RemoteState:
        """One job request (and, once it succeeded, the results)."""
        _check_job_id(remote_id)

        def fetch() -> RemoteState:
            self._connect()
            job = self._workspace.get_job(remote_id)
            details = job.details
            azure_status = str(getattr(details.status, "value", details.status))  # an str enum
            status = _STATUS.get(azure_status)
            if status is None:
                log.warning("Azure Quantum job %s has an unknown status %r", remote_id, azure_status)
                return RemoteState(JobStatus.running)
            if status is JobStatus.succeeded:
                return RemoteState(status, outcome=self._outcome(job))
            if status is JobStatus.failed:
                error = getattr(details, "error_data", None)
                code = _clean_code(getattr(error, "code", None))
                where = str(details.target) if _TARGET_NAME.fullmatch(str(details.target)) else "its target"
                return RemoteState(
                    status,
                    error=BackendUnavailable(
                        f"the Azure Quantum job failed on {where}" + (f" ({code})" if code else ""),
                        azure_code=code,
                        azure_job_id=remote_id,
                    ),
                )
            return RemoteState(status)

        return await self._call("status", fetch, remote_id=remote_id)

    async def cancel(self, remote_id: str) -> None:
        """Ask Azure to cancel the job; nothing to do when it has already finished."""
        _check_job_id(remote_id)

        def cancel() -> None:
            from azure.core.exceptions import HttpResponseError

            self._connect()
            job = self._workspace.get_job(remote_id)
            if job.has_completed():
                return
            try:
                self._workspace.cancel_job(job)
            except HttpResponseError as exc:
                if exc.status_code != 409:  # 409: it finished in the meantime
                    raise

        await self._call("cancel", cancel, remote_id=remote_id)

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
            workspace, self._workspace, self._provider = self._workspace, None, None
            self._backends.clear()
        if workspace is not None:
            try:
                await anyio.to_thread.run_sync(workspace.close)
            except Exception as exc:  # closing sockets: nothing the caller can do
                log.debug("closing the Azure Quantum workspace: %s", type(exc).__name__)

    # -- internals -----------------------------------------------------------------------------

    def _outcome(self, job: Any) -> Outcome:
        """Counts via the SDK's own result parsing (IonQ histograms, QIR v2 histograms, ...)."""
        AzureQuantumJob = _module("azure.quantum.qiskit.job").AzureQuantumJob
        details = job.details
        backend = self._backend(str(details.target))
        try:
            # timeout=0: the job is final, so this only refreshes once and never waits or prints.
            raw = AzureQuantumJob(backend, job).result(timeout=0).get_counts()
        except Exception as exc:
            if _find_azure_error(exc) is not None:
                raise  # the download failed: the seam maps it
            raise BackendUnavailable(
                "the Azure Quantum job succeeded but its results could not be read",
                azure_job_id=str(details.id),
                reason=type(exc).__name__,
            ) from exc
        if isinstance(raw, list):  # one counts dict per experiment; we submit one
            raw = raw[0] if raw else {}
        counts = {str(k): round(float(v)) for k, v in raw.items()}
        seconds = None
        begin, end = (
            getattr(details, "begin_execution_time", None),
            getattr(details, "end_execution_time", None),
        )
        if isinstance(begin, datetime) and isinstance(end, datetime):
            seconds = max(0.0, (end - begin).total_seconds())
        input_params = details.input_params if isinstance(details.input_params, dict) else {}
        return Outcome(
            counts=counts,
            method=str(details.target),
            seconds=seconds,
            details={
                "azure_job_id": str(details.id),
                "target": str(details.target),
                "provider": str(details.provider_id),
                "output_format": str(details.output_data_format),
                "shots": input_params.get("shots"),
            },
        )

    async def _call(
        self, action: str, fn: Callable[[], T], *, target: str | None = None, remote_id: str | None = None
    ) -> T:
        """Run SDK code in a worker thread with the blob bounds set; map what it raises (the seam)."""
        bounds = self._bounds

        def call() -> T:
            token = _STORAGE_BOUNDS.set(bounds)
            try:
                return fn()
            finally:
                _STORAGE_BOUNDS.reset(token)

        try:
            return await anyio.to_thread.run_sync(call)
        except MacroslowError:
            raise
        except Exception as exc:
            raise _map_error(
                exc, action=action, target=target, remote_id=remote_id, settings=self.settings
            ) from exc


def _check_job_id(remote_id: str) -> None:
    if not _JOB_ID.fullmatch(remote_id):
        raise NotFound("no such Azure Quantum job", azure_job_id=remote_id[:64])


# -- the error seam --------------------------------------------------------------------------------


def _find_azure_error(exc: BaseException) -> BaseException | None:
    """The azure-core error in an exception's chain (the SDK wraps some in ValueError/RuntimeError)."""
    from azure.core.exceptions import AzureError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AzureError):
            return current
        current = current.__cause__ or current.__context__
    return None


def _clean_code(code: object) -> str | None:
    text = str(code) if code is not None else ""
    return text if _CODE.fullmatch(text) else None


def _azure_code(exc: Any) -> str | None:
    """The service's error code: the JSON error body's `code`, else `x-ms-error-code`."""
    error = getattr(exc, "error", None)
    code = _clean_code(getattr(error, "code", None))
    if code:
        return code
    code = _clean_code(getattr(exc, "error_code", None))  # azure-storage-blob
    if code:
        return code
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    return _clean_code(headers.get("x-ms-error-code"))


def _retry_after(exc: Any) -> float | None:
    """Seconds from `Retry-After` (seconds or an HTTP date), else `retry-after-ms` /
    `x-ms-retry-after-ms`; None when the response says nothing usable."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        try:
            return max(0.0, float(headers[name]) / 1000)
        except (KeyError, ValueError):
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _scrub(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
            for part in secret.split(";"):
                if part.lower().startswith("apikey=") and len(part) > 7:
                    text = text.replace(part[7:], "[redacted]")
    return text[:300]


def _map_error(
    exc: BaseException,
    *,
    action: str,
    target: str | None,
    remote_id: str | None,
    settings: Settings,
) -> MacroslowError:
    """Azure SDK / azure-core / requests failures -> our errors (the one seam)."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceRequestTimeoutError,
        ServiceResponseError,
        ServiceResponseTimeoutError,
    )

    timeout = settings.azure_quantum_timeout_seconds
    about: dict[str, Any] = {}
    if target:
        about["target"] = target
    if remote_id:
        about["azure_job_id"] = remote_id

    if _is_backend_not_found(exc):
        return NotFound(f"Azure Quantum target '{target}' is not available in this workspace", **about)

    azure = _find_azure_error(exc)
    if azure is None:
        import requests

        if isinstance(exc, requests.Timeout):
            return BackendUnavailable(f"Azure Quantum did not answer within {timeout:g} s", **about)
        if isinstance(exc, requests.RequestException):
            return BackendUnavailable("could not reach Azure Quantum", **about)
        if action == "submit" and _is_translation_error(exc):
            return InvalidDocument(
                f"the circuit cannot run on {target}: {_first_line(str(exc)) or type(exc).__name__}",
                field="circuit",
            )
        log.warning("Azure Quantum %s failed: %s", action, type(exc).__name__, exc_info=exc)
        return BackendUnavailable(f"the Azure Quantum {action} failed ({type(exc).__name__})", **about)

    if isinstance(azure, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
        return BackendUnavailable(
            f"Azure Quantum did not answer within {timeout:g} s", timeout=timeout, **about
        )
    if isinstance(azure, ServiceRequestError):
        return BackendUnavailable("could not connect to Azure Quantum", **about)
    if isinstance(azure, ServiceResponseError):
        return BackendUnavailable("the connection to Azure Quantum broke off", **about)
    if not isinstance(azure, HttpResponseError):
        return BackendUnavailable(f"the Azure Quantum {action} failed ({type(azure).__name__})", **about)

    status = azure.status_code
    code = _azure_code(azure)
    info: dict[str, Any] = {**about, "status": status, "azure_code": code}
    if status is None and isinstance(azure, ClientAuthenticationError):
        # No HTTP response: the credential itself could not produce a token. Its message says which
        # credential sources were tried and why they failed: for the server's log, not the caller.
        log.warning("no Azure credential for Azure Quantum: %s", azure)
        return BackendUnavailable(
            "the server has no usable Azure credential (managed identity, workload identity, "
            "environment or Azure CLI) for Azure Quantum",
            **about,
        )
    if status == 429 or (code and _QUOTA_CODE.search(code)):
        wait = _retry_after(azure)
        return RateLimited(
            f"Azure Quantum is throttling or out of quota ({status}" + (f", {code}" if code else "") + ")",
            retry_after=wait if wait is not None else float(settings.azure_poll_max_seconds),
            **info,
        )
    if status in (401, 403):
        what = "refused the server's credentials" if status == 401 else "denied the server's identity access"
        return BackendUnavailable(f"Azure Quantum {what} ({status})", **info)
    if status == 404:
        if action in ("status", "cancel"):
            return NotFound(f"Azure Quantum has no job '{remote_id}'", **info)
        return NotFound(
            "Azure Quantum could not find the workspace"
            + (f" or target '{target}'" if target else "")
            + f" (404; check {_env('azure_quantum_resource_id')} or the connection string)",
            **info,
        )
    if status is not None and status >= 500:
        return BackendUnavailable(f"Azure Quantum is unavailable ({status})", **info)
    return BackendUnavailable(f"Azure Quantum refused the {action} request ({status})", **info)


def _is_backend_not_found(exc: BaseException) -> bool:
    return isinstance(exc, _module("qiskit.providers.exceptions").QiskitBackendNotFoundError)


def _is_translation_error(exc: BaseException) -> bool:
    """Errors raised while turning the circuit into the target's input (QIR via qsharp, or a
    provider's JSON): the circuit's fault, not the service's."""
    if isinstance(exc, ValueError | NotImplementedError | TypeError):
        return True
    return bool({"QSharpError", "QiskitError"} & {cls.__name__ for cls in type(exc).__mro__})


def _first_line(text: str) -> str:
    """The headline of a (local, multi-line) compiler diagnostic."""
    for line in text.splitlines():
        if line.strip():
            return _scrub(line.strip())[:200]
    return ""


# -- the SDK, loaded lazily with the bounds ---------------------------------------------------------


def _module(name: str) -> Any:
    """Import an untyped module (azure-quantum, qiskit) lazily, as `Any` for the type checker."""
    return importlib.import_module(name)


@dataclass(frozen=True)
class _Sdk:
    Workspace: Any
    AzureQuantumProvider: Any
    mgmt_client: Callable[[Any, _Bounds], Any]


def _retry_policy(bounds: _Bounds) -> Any:
    return _bounded_retry_class()(
        retry_total=RETRY_TOTAL,
        retry_connect=RETRY_TOTAL,
        retry_read=0,  # a read timeout means a hung service: waiting again would double the wait
        retry_status=RETRY_TOTAL,
        retry_backoff_factor=RETRY_BACKOFF_SECONDS,
        retry_backoff_max=RETRY_BACKOFF_MAX_SECONDS,
        timeout=bounds.timeout * (RETRY_TOTAL + 1) + RETRY_BACKOFF_MAX_SECONDS,
    )


@functools.cache
def _bounded_retry_class() -> type[Any]:
    from azure.core.pipeline import PipelineResponse
    from azure.core.pipeline.policies import RetryPolicy

    class BoundedRetryPolicy(RetryPolicy):  # type: ignore[type-arg]
        """azure-core's RetryPolicy that never retries a 429 (the caller paces; it gets
        `RateLimited` with the Retry-After) nor waits longer than `retry_backoff_max` for one."""

        def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
            if response.http_response.status_code == 429:
                return False
            wait = self.get_retry_after(response)
            if wait is not None and wait > self.backoff_max:
                return False
            return bool(super().is_retry(settings, response))

    return BoundedRetryPolicy


@functools.cache
def _sdk() -> _Sdk:
    # azure.quantum.qiskit imports qsharp (the QDK), which by default sends usage telemetry to
    # Azure Application Insights (on import, every 60 s, at exit). A server does not phone home
    # unasked: off unless the operator set either variable (read once, when qsharp is imported).
    if "QSHARP_PYTHON_TELEMETRY" not in os.environ:
        os.environ.setdefault("QDK_PYTHON_TELEMETRY", "none")

    from azure.core import PipelineClient
    from azure.core.pipeline.policies import RetryPolicy

    workspace_base: Any = _module("azure.quantum").Workspace
    WorkspaceMgmtClient = _module("azure.quantum._mgmt_client").WorkspaceMgmtClient
    AzureQuantumProvider = _module("azure.quantum.qiskit").AzureQuantumProvider

    class BoundedWorkspace(workspace_base):  # type: ignore[misc]
        """Workspace whose data-plane client carries the bounds (see the module docstring)."""

        def __init__(self, *args: Any, macroslow_bounds: _Bounds, **kwargs: Any) -> None:
            self._macroslow_bounds = macroslow_bounds
            super().__init__(*args, **kwargs)

        def _create_client(self) -> Any:
            # Mirrors azure-quantum 3.12's Workspace._create_client, plus the pipeline kwargs.
            try:
                WorkspaceClient = _module("azure.quantum._client").WorkspaceClient
                ConnectionConstants = _module("azure.quantum._constants").ConnectionConstants
                params = self._connection_params
                kwargs: dict[str, Any] = {}
                if params.api_version:
                    kwargs["api_version"] = params.api_version
                bounds: _Bounds = self._macroslow_bounds
                return WorkspaceClient(
                    region=params.location,
                    credential=params.get_credential_or_default(),
                    subscription_id=params.subscription_id,
                    resource_group_name=params.resource_group,
                    workspace_name=params.workspace_name,
                    user_agent=params.get_full_user_agent(),
                    credential_scopes=[ConnectionConstants.DATA_PLANE_CREDENTIAL_SCOPE],
                    endpoint=params.quantum_endpoint,
                    authentication_policy=params.get_auth_policy(),
                    retry_policy=_retry_policy(bounds),
                    **bounds.transport_kwargs(),
                    **kwargs,
                )
            except (ImportError, AttributeError) as exc:  # a later SDK moved things: its defaults
                log.warning("azure-quantum changed; Azure requests use the SDK's retry defaults (%s)", exc)
                return super()._create_client()

    def mgmt_client(credential: Any, bounds: _Bounds) -> Any:
        base_url = _module("azure.quantum._constants").ConnectionConstants.ARM_PRODUCTION_ENDPOINT
        client = WorkspaceMgmtClient(credential=credential, base_url=base_url)
        try:
            client._policies = [
                _retry_policy(bounds) if isinstance(p, RetryPolicy) else p for p in client._policies
            ]
            client._client = PipelineClient(
                base_url=base_url, policies=client._policies, **bounds.transport_kwargs()
            )
        except AttributeError as exc:
            log.warning("azure-quantum changed; ARM requests use the SDK's retry defaults (%s)", exc)
        return client

    return _Sdk(
        Workspace=BoundedWorkspace, AzureQuantumProvider=AzureQuantumProvider, mgmt_client=mgmt_client
    )


def _storage_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    bounds = _STORAGE_BOUNDS.get()
    if bounds is None:  # not one of this adapter's calls: the SDK's behaviour, unchanged
        return kwargs
    from azure.storage.blob import LinearRetry

    kwargs.setdefault(
        "retry_policy",
        LinearRetry(backoff=1, random_jitter_range=0, retry_total=RETRY_TOTAL, retry_read=0),
    )
    for key, value in bounds.transport_kwargs().items():
        kwargs.setdefault(key, value)
    return kwargs


@functools.cache
def _install_storage_bounds() -> None:
    """Give the blob clients azure-quantum creates for job data the bounds (when we call it)."""
    base_job = _module("azure.quantum.job.base_job")
    storage = _module("azure.quantum.storage")
    from azure.storage.blob import BlobClient, ContainerClient

    container_base: Any = ContainerClient
    blob_base: Any = BlobClient

    class BoundedContainerClient(container_base):  # type: ignore[misc]
        @classmethod
        def from_container_url(cls, container_url: str, credential: Any = None, **kwargs: Any) -> Any:
            return container_base.from_container_url(container_url, credential, **_storage_kwargs(kwargs))

    class BoundedBlobClient(blob_base):  # type: ignore[misc]
        @classmethod
        def from_blob_url(
            cls, blob_url: str, credential: Any = None, snapshot: Any = None, **kwargs: Any
        ) -> Any:
            return blob_base.from_blob_url(blob_url, credential, snapshot, **_storage_kwargs(kwargs))

    patched = 0
    for module, name, replacement in (
        (base_job, "ContainerClient", BoundedContainerClient),
        (storage, "ContainerClient", BoundedContainerClient),
        (storage, "BlobClient", BoundedBlobClient),
    ):
        if getattr(module, name, None) in (ContainerClient, BlobClient):
            setattr(module, name, replacement)
            patched += 1
    if patched < 3:
        log.warning("azure-quantum changed; blob requests use azure-storage-blob's retry defaults")


__all__ = ["AzureQuantumBackend", "is_simulator"]
