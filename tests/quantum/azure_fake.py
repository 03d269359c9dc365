"""A loopback fake of Azure Quantum (and the bits of ARM and Blob Storage it needs), for the real SDK.

How the SDK reaches it
----------------------
azure-quantum 3.12 cannot be pointed at a loopback address through its public settings: a connection
string must say `QuantumEndpoint=https://<region>.quantum.azure.com/` (the SDK's regex refuses
anything else), the Entra ID path asks ARM (`management.azure.com`) for the workspace's endpoint, and
job data goes to whatever `*.blob.core.windows.net` SAS URLs the service hands out. So the fake is an
HTTPS *proxy*: it listens on 127.0.0.1 (random port) as a plain HTTP proxy, accepts `CONNECT` for
`management.azure.com`, `<location>.quantum.azure.com` and `<account>.blob.core.windows.net` only
(anything else is refused with 403 and recorded, so a test can never reach the internet through it),
and terminates TLS inside the tunnel with a certificate for those names from a throwaway `trustme` CA.
TLS matters: azure-core refuses to send bearer tokens over plain http.

The SDK's real transport (azure-core's `RequestsTransport`, a `requests.Session` with `trust_env`)
picks both up from the environment, which `AzureQuantumFake.env` describes and `azure_fake(...)`
applies with `monkeypatch`:

    HTTPS_PROXY / https_proxy = http://127.0.0.1:<port>   (NO_PROXY / no_proxy emptied)
    REQUESTS_CA_BUNDLE        = <the trustme CA's PEM>     (requests uses it when verify=True)

Nothing in the adapter or the SDK is patched for the fake; a child process (the whole MCP server)
works the same way with `fake.env` in its environment and `fake.settings_overrides` as settings.

Observed requests (azure-quantum 3.12.0 + azure-storage-blob 12.31, through `AzureQuantumBackend`,
i.e. the Qiskit provider's default backend for `ionq.simulator`, which is its QIR one; {ws} is
/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Quantum/workspaces/{name}, every
data-plane call carries ?api-version=2026-01-15-preview and either `x-ms-quantum-api-key`
(connection string) or `Authorization: Bearer` (scope https://quantum.microsoft.com/.default); blob
calls carry only the SAS in the query):

    Entra ID only, when the Workspace is built (scope https://management.azure.com/.default):
    GET  management.azure.com          {ws}?api-version=2025-12-15-preview  -> location, endpointUri
    submit:
    GET  eastus.quantum.azure.com      {ws}/providerStatus        target discovery (once per target)
    POST eastus.quantum.azure.com      {ws}/storage/sasUri        {"containerName": "job-<id>"}
    PUT  <acct>.blob.core.windows.net  /job-<id>/inputData        the QIR (x-ms-blob-content-type qir.v1)
    PUT  eastus.quantum.azure.com      {ws}/jobs/<id>             JobDetails (itemType Job, inputParams
                                                                  {shots, items}, metadata, formats)
    each poll:
    GET  eastus.quantum.azure.com      {ws}/jobs/<id>
    the poll that sees Succeeded, then the results:
    GET  eastus.quantum.azure.com      {ws}/jobs/<id>             AzureQuantumJob.result() refreshes
    GET  <acct>.blob.core.windows.net  /job-<id>/rawOutputData    (x-ms-range) the histogram...
    GET  <acct>.blob.core.windows.net  /job-<id>/rawOutputData    ...and again for the shots
    GET  eastus.quantum.azure.com      {ws}/jobs/<id>             the v2 formatter asks the status
    cancel:
    GET  {ws}/jobs/<id>, POST {ws}/jobs/<id>:cancel (answered 204, as the service does), GET {ws}/jobs/<id>

The test `test_request_sequence` in test_azure.py checks this sequence against the fake's log.

Using it
--------
    with azure_fake(monkeypatch, auto_advance=True) as fake:   # tests: the env via monkeypatch
        settings = Settings(..., **fake.settings_overrides)    # the connection-string path
        fake.counts = {"00": 48, "11": 52}                      # what succeeded jobs return
        ... run_quantum_circuit(backend="azure:ionq.simulator") through the MCP tool ...
        fake.jobs, fake.requests, fake.lines()                  # what happened

    A server in a child process: env = {**os.environ, **fake.env, **fake.settings_env}.
    Entra ID instead of an API key: `fake.credential_settings_overrides` and a credential object
    passed to `AzureQuantumBackend.from_settings(settings, credential=...)` (the fake accepts any
    bearer token, or only `fake.bearer_tokens` when set; it does not play the Entra ID token
    endpoint, so DefaultAzureCredential itself cannot be exercised against it).

Jobs start Waiting; `fake.set_job_status(id, "Executing" | "Succeeded" | "Failed" | ...)` moves
them (Succeeded writes the results blob in the job's output format: microsoft.quantum-results.v2
for QIR jobs, IonQ's histogram for ionq.quantum-results.v1), or `auto_advance=True` moves them one
step per status request. `fake.fail(route, status, code=..., retry_after=..., delay=..., times=...)`
injects faults per route (`ROUTES`); `fake.add_job(...)` plants a job as another client would have
submitted it (e.g. in IonQ's JSON format). Results are not simulated: they are `fake.counts` (or
per job), else all zeros shaped like the circuit's classical registers.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import socketserver
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import trustme

SUBSCRIPTION_ID = "0b6e4a5c-6a6f-4c7e-9d0e-5b0f5a3a1c01"
RESOURCE_GROUP = "rg-macroslow-test"
WORKSPACE = "ws-macroslow-test"
LOCATION = "eastus"
API_KEY = "fake-api-key-0123456789abcdef"
STORAGE_ACCOUNT = "macroslowfakestore"
_SAS_SIG = "fakesig0123"
_SAS_QUERY = f"sv=2023-11-03&se=2099-01-01T00%3A00%3A00Z&sr=c&sp=racw&sig={_SAS_SIG}"
ARM_HOST = "management.azure.com"

# Routes that faults can be injected on (`fake.fail(route, ...)`); "*" matches every route.
ROUTES = (
    "workspace",  # ARM: GET the workspace resource (location, endpointUri) - Entra ID path only
    "providers",  # GET providerStatus (target discovery)
    "sas",  # POST storage/sasUri
    "blob.put",  # PUT a blob (input data)
    "blob.get",  # GET a blob (results)
    "job.create",  # PUT jobs/{id}
    "job.get",  # GET jobs/{id}
    "job.cancel",  # POST jobs/{id}:cancel
    "job.list",  # GET jobs
)

FINAL_STATUSES = ("Succeeded", "Failed", "Cancelled")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    host: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    route: str | None  # None: not a route the fake knows (answered 404)
    tls: bool  # inside a TLS tunnel (everything the fake answers properly is)

    def line(self) -> str:
        return f"{self.method} {self.host} {self.path}"


@dataclass
class Fault:
    status: int | None = None  # None: no error response, only the delay
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    times: int | None = None  # None: until cleared


@dataclass
class _Job:
    details: dict[str, Any]
    counts: dict[str, int] | None = None
    input_blob: bytes = b""
    gets: int = 0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AzureQuantumFake:
    """The fake service. Start with `start()` (or use `azure_fake(...)`), stop with `close()`."""

    def __init__(
        self,
        *,
        subscription_id: str = SUBSCRIPTION_ID,
        resource_group: str = RESOURCE_GROUP,
        workspace: str = WORKSPACE,
        location: str = LOCATION,
        api_key: str = API_KEY,
        bearer_tokens: tuple[str, ...] = (),
        auto_advance: bool = False,
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace = workspace
        self.location = location
        self.api_key = api_key
        self.bearer_tokens = set(bearer_tokens)  # empty: any non-empty bearer token is accepted
        self.auto_advance = auto_advance  # each GET of a job moves it Waiting -> Executing -> Succeeded
        self.counts: dict[str, int] | None = None  # Qiskit-order bitstrings; default: all zeros
        self.targets: dict[str, list[dict[str, Any]]] = {
            "ionq": [
                {"id": "ionq.simulator", "numQubits": 29, "targetProfile": "Base"},
                {"id": "ionq.qpu.aria-1", "numQubits": 25, "targetProfile": "Base"},
            ],
            "quantinuum": [
                {"id": "quantinuum.sim.h2-1e", "numQubits": 56, "targetProfile": "Adaptive_RI"},
                {"id": "quantinuum.qpu.h2-1", "numQubits": 56, "targetProfile": "Adaptive_RI"},
            ],
            "rigetti": [
                {"id": "rigetti.sim.qvm", "numQubits": 20, "targetProfile": "Adaptive_RI"},
            ],
        }
        self.requests: list[RecordedRequest] = []
        self.refused_hosts: list[str] = []
        self.jobs: dict[str, _Job] = {}
        self.blobs: dict[tuple[str, str], tuple[bytes, str]] = {}  # (container, name) -> (data, type)
        self._faults: dict[str, Fault] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._dir = Path(tempfile.mkdtemp(prefix="azure-fake-"))
        self._ca = trustme.CA()
        self._cert = self._ca.issue_cert(
            ARM_HOST, f"{location}.quantum.azure.com", f"{STORAGE_ACCOUNT}.blob.core.windows.net"
        )
        self.ca_path = self._dir / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(self._tls)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> AzureQuantumFake:
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        server = _Server(("127.0.0.1", 0), handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="azure-fake", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    # -- what a client needs -------------------------------------------------------------------

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a process whose Azure SDK traffic should reach the fake."""
        return {
            "HTTPS_PROXY": self.proxy_url,
            "https_proxy": self.proxy_url,
            "NO_PROXY": "",
            "no_proxy": "",
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
        }

    @property
    def endpoint(self) -> str:
        return f"https://{self.location}.quantum.azure.com/"

    @property
    def connection_string(self) -> str:
        return (
            f"SubscriptionId={self.subscription_id};ResourceGroupName={self.resource_group};"
            f"WorkspaceName={self.workspace};ApiKey={self.api_key};QuantumEndpoint={self.endpoint};"
        )

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Quantum/Workspaces/{self.workspace}"
        )

    @property
    def settings_overrides(self) -> dict[str, Any]:
        """`Settings` field values for the connection-string path (an API key, no Entra ID)."""
        return {
            "azure_quantum_connection_string": self.connection_string,
            "azure_quantum_location": self.location,
        }

    @property
    def settings_env(self) -> dict[str, str]:
        """The same as environment variables, for a server in a child process."""
        return {
            "MACROSLOW_AZURE_QUANTUM_CONNECTION_STRING": self.connection_string,
            "MACROSLOW_AZURE_QUANTUM_LOCATION": self.location,
        }

    @property
    def credential_settings_overrides(self) -> dict[str, Any]:
        """`Settings` field values for the Entra ID path (pass a credential to the adapter)."""
        return {"azure_quantum_resource_id": self.resource_id, "azure_quantum_location": self.location}

    # -- test controls -------------------------------------------------------------------------

    def fail(
        self,
        route: str,
        status: int | None = 503,
        *,
        code: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        times: int | None = None,
    ) -> None:
        """Answer `route` with an error (Azure-style JSON; Storage-style XML on blob routes) and/or
        after `delay` seconds, for the next `times` requests (default: until `clear_faults()`)."""
        if route != "*" and route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; one of {ROUTES}")
        with self._lock:
            self._faults[route] = Fault(status, code, message, retry_after, delay, times)

    def delay(self, route: str, seconds: float, *, times: int | None = None) -> None:
        self.fail(route, None, delay=seconds, times=times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_job_status(
        self,
        job_id: str,
        status: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        """Move a job to `status` (Waiting, Executing, Finishing, Succeeded, Failed, Cancelled...).
        Succeeded writes the results blob (from `counts`, else `fake.counts`, else all zeros)."""
        with self._lock:
            job = self.jobs[job_id]
            if counts is not None:
                job.counts = counts
            self._set_status(job, status, error_code=error_code, error_message=error_message)

    def add_job(
        self,
        *,
        target: str = "ionq.simulator",
        provider_id: str = "ionq",
        input_data_format: str = "ionq.circuit.v1",
        output_data_format: str = "ionq.quantum-results.v1",
        input_params: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        status: str = "Waiting",
        counts: dict[str, int] | None = None,
    ) -> str:
        """A job as another client would have submitted it (e.g. with IonQ's JSON circuit format,
        whose results are IonQ histograms); returns its id."""
        job_id = str(uuid.uuid4())
        container = f"job-{job_id}"
        details: dict[str, Any] = {
            "id": job_id,
            "name": "planted",
            "itemType": "Job",
            "jobType": "QuantumComputing",
            "providerId": provider_id,
            "target": target,
            "containerUri": f"{_blob_base()}/{container}?{_SAS_QUERY}",
            "inputDataUri": f"{_blob_base()}/{container}/inputData",
            "inputDataFormat": input_data_format,
            "outputDataFormat": output_data_format,
            "inputParams": input_params if input_params is not None else {"shots": 100},
            "metadata": metadata if metadata is not None else {"qiskit": "True", "num_qubits": "2"},
            "status": "Waiting",
            "creationTime": _now(),
        }
        with self._lock:
            job = _Job(details=details, counts=counts)
            self.jobs[job_id] = job
            if status != "Waiting":
                self._set_status(job, status)
        return job_id

    @property
    def last_job_id(self) -> str:
        with self._lock:
            assert self.jobs, "no job was submitted"
            return list(self.jobs)[-1]

    def lines(self) -> list[str]:
        return [r.line() for r in self.requests]

    # -- internals -----------------------------------------------------------------------------

    def _take_fault(self, route: str) -> Fault | None:
        with self._lock:
            for key in (route, "*"):
                fault = self._faults.get(key)
                if fault is None:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._faults[key]
                return fault
        return None

    def _set_status(
        self, job: _Job, status: str, *, error_code: str | None = None, error_message: str | None = None
    ) -> None:
        d = job.details
        d["status"] = status
        if status in ("Executing", "Finishing") and not d.get("beginExecutionTime"):
            d["beginExecutionTime"] = _now()
        if status in FINAL_STATUSES:
            d["endExecutionTime"] = _now()
        if status == "Cancelled":
            d["cancellationTime"] = _now()
        if status == "Failed":
            d["errorData"] = {
                "code": error_code or "ExecutionFailed",
                "message": error_message or "The job failed on the target.",
            }
        if status == "Succeeded":
            self._write_results(job)

    def _write_results(self, job: _Job) -> None:
        d = job.details
        shots = int((d.get("inputParams") or {}).get("shots") or 100)
        counts = job.counts or self.counts or {_zero_bitstring(job.input_blob, d): shots}
        fmt = d.get("outputDataFormat") or "microsoft.quantum-results.v2"
        if fmt == "ionq.quantum-results.v1":
            total = sum(counts.values())
            hist = {str(int(k.replace(" ", ""), 2)): v / total for k, v in counts.items()}
            payload: dict[str, Any] = {"histogram": hist}
        else:  # microsoft.quantum-results.v2 (every QIR target)
            histogram = []
            shot_list: list[Any] = []
            for bits, n in counts.items():
                outcome, display = _qir_outcome(bits)
                histogram.append({"Outcome": outcome, "Display": display, "Count": n})
                shot_list.extend([outcome] * n)
            payload = {
                "DataFormat": "microsoft.quantum-results.v2",
                "Results": [{"Histogram": histogram, "Shots": shot_list}],
            }
        container = _container_of(d["containerUri"])
        self.blobs[(container, "rawOutputData")] = (json.dumps(payload).encode(), "application/json")
        d["outputDataUri"] = f"{_blob_base()}/{container}/rawOutputData?{_SAS_QUERY.replace('sr=c', 'sr=b')}"


def _blob_base() -> str:
    return f"https://{STORAGE_ACCOUNT}.blob.core.windows.net"


def _container_of(uri: str) -> str:
    return urlsplit(uri).path.strip("/").split("/")[0]


def _qir_outcome(bits: str) -> tuple[Any, str]:
    """A Qiskit count key ("01", or "1 01" for two registers) as a v2 Outcome and its Display.

    The Qiskit -> QIR translation (qsharp) records one array per classical register, last register
    first, each from its highest bit down, so a register's list reads like the Qiskit string and the
    registers come in the order Qiskit prints them; several registers make a tuple, which the JSON
    carries as {"Item1": ..., "Item2": ...}."""
    registers = [[int(b) for b in part] for part in bits.split(" ")]
    if len(registers) == 1:
        return registers[0], str(registers[0])
    outcome = {f"Item{i + 1}": reg for i, reg in enumerate(registers)}
    return outcome, "(" + ", ".join(str(r) for r in registers) + ")"


_RECORD = re.compile(r"__quantum__rt__(tuple|array)_record_output\(i64 (\d+)")


def _zero_bitstring(input_blob: bytes, details: dict[str, Any]) -> str:
    """All zeros, shaped like the circuit's classical registers (read from the QIR's output
    recording), or like its qubits for non-QIR input."""
    text = input_blob.decode("utf-8", "replace")
    sizes = [int(n) for kind, n in _RECORD.findall(text) if kind == "array"]
    if sizes:
        return " ".join("0" * n for n in sizes)
    qubits = int((details.get("metadata") or {}).get("num_qubits") or 1)
    return "0" * qubits


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def track(self, sock: socket.socket, *, replaces: socket.socket | None = None) -> None:
        with self.sockets_lock:
            if replaces is not None:
                self.open_sockets.discard(replaces)
            self.open_sockets.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(sock)

    def close_connections(self) -> None:
        """Hang up on every client (kept-alive tunnels would otherwise hold their threads)."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are expected here


class _Handler(BaseHTTPRequestHandler):
    fake: AzureQuantumFake
    protocol_version = "HTTP/1.1"
    tunnel_host: str | None = None

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.untrack(self.connection)
            if self.tunnel_host is not None:  # the TLS wrapper owns the socket now: close it here
                with contextlib.suppress(OSError):
                    self.connection.close()

    # -- the proxy part --------------------------------------------------------------------------

    def do_CONNECT(self) -> None:
        host = self.path.rsplit(":", 1)[0].lower()
        fake = self.fake
        allowed = {ARM_HOST, f"{fake.location}.quantum.azure.com", f"{STORAGE_ACCOUNT}.blob.core.windows.net"}
        if host not in allowed:
            fake.refused_hosts.append(host)
            self.send_response(403, "Not a host this fake serves")
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.close_connection = True
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        raw = self.connection
        try:
            self.connection = fake._tls.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        self.server.track(self.connection, replaces=raw)
        self.rfile = self.connection.makefile("rb", -1)
        self.wfile = socketserver._SocketWriter(self.connection)  # type: ignore[attr-defined]
        self.tunnel_host = host
        self.close_connection = False

    # -- HTTP inside the tunnel ------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _dispatch(self) -> None:
        fake = self.fake
        body = self._read_body()
        if self.tunnel_host is None:  # a plain-http request to the proxy itself
            with fake._lock:
                fake.requests.append(
                    RecordedRequest(
                        self.command, "", self.path, {}, dict(self.headers.items()), body, None, False
                    )
                )
            self._send(400, b"this fake is an HTTPS proxy: use CONNECT", "text/plain")
            return
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        host = self.tunnel_host
        route, params = self._route(host, self.command, path)
        with fake._lock:
            fake.requests.append(
                RecordedRequest(
                    self.command, host, path, query, dict(self.headers.items()), body, route, True
                )
            )
        if route is None:
            self._error(404, "NotFound", f"No route for {self.command} {path}", host)
            return
        if not self._authorized(host, route, query):
            return
        fault = fake._take_fault(route)
        if fault is not None:
            if fault.delay:
                fake._stopping.wait(fault.delay)
            if fault.status is not None:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(int(fault.retry_after))
                code = fault.code or _default_code(fault.status)
                self._error(fault.status, code, fault.message or f"Injected {code}.", host, headers)
                return
        handler = getattr(self, "_h_" + route.replace(".", "_"))
        handler(body, query, **params)

    def _route(self, host: str, method: str, path: str) -> tuple[str | None, dict[str, str]]:
        fake = self.fake
        ws = (
            f"/subscriptions/{fake.subscription_id}/resourceGroups/{fake.resource_group}"
            f"/providers/Microsoft.Quantum/workspaces/{fake.workspace}"
        )
        if host == ARM_HOST:
            if method == "GET" and path.lower() == ws.lower():
                return "workspace", {}
            return None, {}
        if host.endswith(".blob.core.windows.net"):
            bits = path.strip("/").split("/", 1)
            if len(bits) == 2 and method in ("PUT", "GET", "HEAD"):
                return ("blob.put" if method == "PUT" else "blob.get"), {
                    "container": bits[0],
                    "blob": bits[1],
                }
            return None, {}
        if not path.lower().startswith(ws.lower()):
            return None, {}
        rest = path[len(ws) :]
        if method == "GET" and rest == "/providerStatus":
            return "providers", {}
        if method == "POST" and rest == "/storage/sasUri":
            return "sas", {}
        if method == "GET" and rest == "/jobs":
            return "job.list", {}
        m = re.fullmatch(r"/jobs/([^/:]+)(:cancel)?", rest)
        if m:
            if m.group(2) and method == "POST":
                return "job.cancel", {"job_id": m.group(1)}
            if not m.group(2) and method == "PUT":
                return "job.create", {"job_id": m.group(1)}
            if not m.group(2) and method == "GET":
                return "job.get", {"job_id": m.group(1)}
        return None, {}

    def _authorized(self, host: str, route: str, query: dict[str, list[str]]) -> bool:
        fake = self.fake
        if host.endswith(".blob.core.windows.net"):
            if query.get("sig") != [_SAS_SIG]:
                self._error(403, "AuthenticationFailed", "Server failed to authenticate the request.", host)
                return False
            return True
        auth = self.headers.get("Authorization", "")
        key = self.headers.get("x-ms-quantum-api-key")
        if auth.startswith("Bearer ") and auth[7:].strip():
            token = auth[7:].strip()
            if fake.bearer_tokens and token not in fake.bearer_tokens:
                self._error(401, "InvalidAuthenticationToken", "The access token is invalid.", host)
                return False
            return True
        if key is not None and host != ARM_HOST:
            if key != fake.api_key:
                self._error(401, "Unauthorized", "The API key is not valid for this workspace.", host)
                return False
            return True
        self._error(401, "AuthenticationFailed", "Authentication failed: no credentials.", host)
        return False

    # -- route handlers --------------------------------------------------------------------------

    def _h_workspace(self, body: bytes, query: dict[str, list[str]]) -> None:
        fake = self.fake
        self._json(
            200,
            {
                "id": fake.resource_id,
                "name": fake.workspace,
                "type": "microsoft.quantum/workspaces",
                "location": fake.location,
                "properties": {
                    "provisioningState": "Succeeded",
                    "endpointUri": fake.endpoint,
                    "storageAccount": f"/subscriptions/{fake.subscription_id}/resourceGroups/"
                    f"{fake.resource_group}/providers/Microsoft.Storage/storageAccounts/{STORAGE_ACCOUNT}",
                },
            },
        )

    def _h_providers(self, body: bytes, query: dict[str, list[str]]) -> None:
        value = [
            {
                "id": provider,
                "currentAvailability": "Available",
                "targets": [
                    {"currentAvailability": "Available", "averageQueueTime": 5, "statusPage": None, **t}
                    for t in targets
                ],
            }
            for provider, targets in self.fake.targets.items()
        ]
        self._json(200, {"value": value, "nextLink": None})

    def _h_sas(self, body: bytes, query: dict[str, list[str]]) -> None:
        req = json.loads(body or b"{}")
        container = req.get("containerName")
        if not container:
            self._error(400, "InvalidRequest", "containerName is required.", self.tunnel_host or "")
            return
        blob = req.get("blobName")
        if blob:
            uri = f"{_blob_base()}/{container}/{quote(blob)}?{_SAS_QUERY.replace('sr=c', 'sr=b')}"
        else:
            uri = f"{_blob_base()}/{container}?{_SAS_QUERY}"
        self._json(200, {"sasUri": uri})

    def _h_blob_put(self, body: bytes, query: dict[str, list[str]], container: str, blob: str) -> None:
        fake = self.fake
        with fake._lock:
            fake.blobs[(container, blob)] = (body, self.headers.get("x-ms-blob-content-type", ""))
        self._send(201, b"", None, self._blob_headers(body))

    def _h_blob_get(self, body: bytes, query: dict[str, list[str]], container: str, blob: str) -> None:
        fake = self.fake
        with fake._lock:
            stored = fake.blobs.get((container, blob))
        if stored is None:
            self._error(404, "BlobNotFound", "The specified blob does not exist.", self.tunnel_host or "")
            return
        data, content_type = stored
        headers = self._blob_headers(data)
        headers["x-ms-blob-type"] = "BlockBlob"
        headers["Accept-Ranges"] = "bytes"
        status = 200
        rng = self.headers.get("x-ms-range") or self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[6:].partition("-")
            start = int(start_s)
            end = min(int(end_s) if end_s else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self._error(416, "InvalidRange", "The range specified is invalid.", self.tunnel_host or "")
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start : end + 1]
            status = 206
        if self.command == "HEAD":
            headers["Content-Length"] = str(len(data))
            self._send(status, b"", content_type or "application/octet-stream", headers, head=True)
            return
        self._send(status, data, content_type or "application/octet-stream", headers)

    def _h_job_create(self, body: bytes, query: dict[str, list[str]], job_id: str) -> None:
        fake = self.fake
        host = self.tunnel_host or ""
        req = json.loads(body or b"{}")
        with fake._lock:
            if job_id in fake.jobs:
                self._error(409, "JobAlreadyExists", "A job with this id already exists.", host)
                return
            input_uri = req.get("inputDataUri") or ""
            blob = fake.blobs.get((_container_of(input_uri), urlsplit(input_uri).path.split("/", 2)[-1]))
            details = {
                **req,
                "id": job_id,
                "itemType": "Job",
                "jobType": req.get("jobType") or "QuantumComputing",
                "status": "Waiting",
                "creationTime": _now(),
                "beginExecutionTime": None,
                "endExecutionTime": None,
                "cancellationTime": None,
                "outputDataUri": None,
                "errorData": None,
                "costEstimate": None,
            }
            job = _Job(details=details, input_blob=blob[0] if blob else b"")
            fake.jobs[job_id] = job
            self._json(201, details)

    def _h_job_get(self, body: bytes, query: dict[str, list[str]], job_id: str) -> None:
        fake = self.fake
        with fake._lock:
            job = fake.jobs.get(job_id)
            if job is None:
                self._error(404, "JobNotFound", f"Job {job_id} was not found.", self.tunnel_host or "")
                return
            job.gets += 1
            self._json(200, job.details)
            if fake.auto_advance:
                nxt = {"Waiting": "Executing", "Executing": "Succeeded"}.get(job.details["status"])
                if nxt:
                    fake._set_status(job, nxt)

    def _h_job_cancel(self, body: bytes, query: dict[str, list[str]], job_id: str) -> None:
        fake = self.fake
        with fake._lock:
            job = fake.jobs.get(job_id)
            if job is None:
                self._error(404, "JobNotFound", f"Job {job_id} was not found.", self.tunnel_host or "")
                return
            if job.details["status"] in FINAL_STATUSES:
                self._error(409, "InvalidJobState", "The job has already finished.", self.tunnel_host or "")
                return
            fake._set_status(job, "Cancelled")
        self._send(204, b"", None)

    def _h_job_list(self, body: bytes, query: dict[str, list[str]]) -> None:
        with self.fake._lock:
            value = [j.details for j in self.fake.jobs.values()]
        self._json(200, {"value": value, "nextLink": None})

    # -- responses -------------------------------------------------------------------------------

    def _blob_headers(self, data: bytes) -> dict[str, str]:
        return {
            "ETag": f'"0x{abs(hash(data)) & 0xFFFFFFFFFFFF:X}"',
            "Last-Modified": formatdate(usegmt=True),
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-version": "2025-11-05",
            "x-ms-request-server-encrypted": "true",
        }

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _error(
        self, status: int, code: str, message: str, host: str, headers: dict[str, str] | None = None
    ) -> None:
        headers = dict(headers or {})
        headers["x-ms-error-code"] = code
        if host.endswith(".blob.core.windows.net"):
            xml = (
                '<?xml version="1.0" encoding="utf-8"?><Error>'
                f"<Code>{code}</Code><Message>{message}\nRequestId:{uuid.uuid4()}</Message></Error>"
            )
            self._send(status, xml.encode(), "application/xml", headers)
        else:
            self._json(status, {"error": {"code": code, "message": message}}, headers)

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
        *,
        head: bool = False,
    ) -> None:
        try:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", str(uuid.uuid4()))
            self.end_headers()
            if data and not head:
                self.wfile.write(data)
        except OSError:
            self.close_connection = True


def _default_code(status: int) -> str:
    return {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        408: "RequestTimeout",
        409: "Conflict",
        429: "TooManyRequests",
        500: "InternalServerError",
        502: "BadGateway",
        503: "ServiceUnavailable",
        504: "GatewayTimeout",
    }.get(status, f"Http{status}")


@contextlib.contextmanager
def azure_fake(monkeypatch: pytest.MonkeyPatch | None = None, **kwargs: Any) -> Iterator[AzureQuantumFake]:
    """Start a fake, route this process's Azure SDK traffic to it (when given `monkeypatch`: the
    proxy and CA variables of `fake.env`, undone by pytest), yield it, stop it.

    TLS trust: the SDK's transport is azure-core's `RequestsTransport` (`verify=True`,
    `trust_env=True`), so `requests` reads `REQUESTS_CA_BUNDLE` and the proxy variables from the
    environment on every request; nothing else is needed, and nothing in the SDK is patched.
    `kwargs` go to `AzureQuantumFake` (e.g. `auto_advance=True` for end-to-end runs)."""
    fake = AzureQuantumFake(**kwargs).start()
    try:
        if monkeypatch is not None:
            for name, value in fake.env.items():
                monkeypatch.setenv(name, value)
        yield fake
    finally:
        fake.close()


__all__ = ["ROUTES", "AzureQuantumFake", "Fault", "RecordedRequest", "azure_fake"]
