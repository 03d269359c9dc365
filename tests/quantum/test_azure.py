"""The real Azure Quantum adapter (and the real azure-quantum SDK) against the loopback fake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from azure.core.credentials import AccessToken
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister

from mcp_server.errors import (
    BackendUnavailable,
    Forbidden,
    InvalidDocument,
    MacroslowError,
    NotFound,
    RateLimited,
)
from mcp_server.quantum.azure import AzureQuantumBackend, is_simulator
from mcp_server.quantum.backends import JobStatus, RemoteState, Submission
from mcp_server.settings import Settings
from tests.quantum.azure_fake import AzureQuantumFake, azure_fake

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AZURE_ENV = (
    "MACROSLOW_AZURE_QUANTUM_CONNECTION_STRING",
    "AZURE_QUANTUM_CONNECTION_STRING",
    "MACROSLOW_AZURE_QUANTUM_RESOURCE_ID",
    "AZURE_QUANTUM_RESOURCE_ID",
    "MACROSLOW_AZURE_SUBSCRIPTION_ID",
    "AZURE_SUBSCRIPTION_ID",
    "MACROSLOW_AZURE_RESOURCE_GROUP",
    "AZURE_RESOURCE_GROUP",
    "MACROSLOW_AZURE_QUANTUM_WORKSPACE",
    "AZURE_QUANTUM_WORKSPACE",
    "MACROSLOW_AZURE_QUANTUM_LOCATION",
    "AZURE_QUANTUM_LOCATION",
    "MACROSLOW_AZURE_QUANTUM_ALLOW_QPU",
)


class StaticCredential:
    """A TokenCredential: a fixed token, and a log of the scopes asked for."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture(autouse=True)
def _no_azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AZURE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureQuantumFake]:
    with azure_fake(monkeypatch) as f:
        yield f
    assert not f.refused_hosts, f"the SDK tried to leave the fake: {f.refused_hosts}"


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"home": tmp_path / "home", "azure_quantum_timeout_seconds": 5.0}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2, 2, name="bell")
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    return qc


def submission(
    target: str = "ionq.simulator", circuit: QuantumCircuit | None = None, shots: int = 100
) -> Submission:
    return Submission(job_id="job-123", circuit=circuit or bell(), shots=shots, seed=None, target=target)


def run(coro_fn: Any, *args: Any) -> Any:
    return anyio.run(coro_fn, *args)


def raises(exc_type: type[MacroslowError], coro_fn: Any, *args: Any) -> MacroslowError:
    with pytest.raises(exc_type) as info:
        anyio.run(coro_fn, *args)
    return info.value


def text_of(error: MacroslowError) -> str:
    """Everything a caller could see of an error."""
    return f"{error} {error!r} {json.dumps(error.to_dict())}"


# -- the happy paths ---------------------------------------------------------------------------


def test_submit_poll_results_with_a_connection_string(fake: AzureQuantumFake, tmp_path: Path) -> None:
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    remote_id = run(backend.submit, submission())
    assert remote_id == fake.last_job_id
    job = fake.jobs[remote_id].details
    assert job["name"] == "job-123"  # our job id, as the Azure job's name
    assert job["target"] == "ionq.simulator"
    assert job["inputParams"]["shots"] == 100
    assert fake.jobs[remote_id].input_blob.startswith(b"%Result = type opaque")  # QIR, made locally

    assert run(backend.status, remote_id) == RemoteState(JobStatus.queued)
    fake.set_job_status(remote_id, "Executing")
    assert run(backend.status, remote_id) == RemoteState(JobStatus.running)
    fake.set_job_status(remote_id, "Finishing")
    assert run(backend.status, remote_id) == RemoteState(JobStatus.running)
    fake.set_job_status(remote_id, "Succeeded", counts={"00": 47, "11": 53})
    state = run(backend.status, remote_id)
    assert state.status is JobStatus.succeeded
    assert state.outcome.counts == {"00": 47, "11": 53}
    assert state.outcome.method == "ionq.simulator"
    assert state.outcome.details["azure_job_id"] == remote_id
    assert state.outcome.details["output_format"] == "microsoft.quantum-results.v2"
    assert state.outcome.seconds is not None and state.outcome.seconds >= 0

    # The API key went to the quantum endpoint only, in its header; blobs got the SAS only.
    for request in fake.requests:
        assert request.tls
        assert "Authorization" not in request.headers
        if request.host.endswith(".quantum.azure.com"):
            assert request.headers["x-ms-quantum-api-key"] == fake.api_key
            assert request.query["api-version"] == ["2026-01-15-preview"]
        else:
            assert "x-ms-quantum-api-key" not in request.headers
            assert request.query["sig"]
    run(backend.aclose)


def test_request_sequence(fake: AzureQuantumFake, tmp_path: Path) -> None:
    """The REST calls of one submit / poll / result / cancel cycle, as azure_fake.py documents."""
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    remote_id = run(backend.submit, submission())
    assert [r.route for r in fake.requests] == ["providers", "sas", "blob.put", "job.create"]
    sas = json.loads(fake.requests[1].body)
    assert sas == {"containerName": f"job-{remote_id}"}

    fake.requests.clear()
    run(backend.status, remote_id)
    assert [r.route for r in fake.requests] == ["job.get"]

    fake.requests.clear()
    fake.set_job_status(remote_id, "Succeeded")
    run(backend.status, remote_id)
    assert [r.route for r in fake.requests] == ["job.get", "job.get", "blob.get", "blob.get", "job.get"]
    assert fake.requests[2].path == f"/job-{remote_id}/rawOutputData"

    fake.requests.clear()
    second = run(backend.submit, submission())
    assert [r.route for r in fake.requests] == ["sas", "blob.put", "job.create"]  # target known now
    fake.requests.clear()
    run(backend.cancel, second)
    assert [r.line().split(" ")[0] + " " + (r.route or "") for r in fake.requests] == [
        "GET job.get",
        "POST job.cancel",
        "GET job.get",
    ]
    run(backend.aclose)


def test_default_results_are_shaped_like_the_registers(fake: AzureQuantumFake, tmp_path: Path) -> None:
    """Two classical registers: Qiskit's "a c" keys survive the QIR round trip."""
    qr, c, a = QuantumRegister(3), ClassicalRegister(2, "c"), ClassicalRegister(1, "a")
    qc = QuantumCircuit(qr, c, a)
    qc.x(0)
    qc.measure(0, c[0])
    qc.measure(1, c[1])
    qc.measure(0, a[0])
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    remote_id = run(backend.submit, submission(circuit=qc, shots=20))
    fake.set_job_status(remote_id, "Succeeded")  # no counts given: all zeros, in the right shape
    assert run(backend.status, remote_id).outcome.counts == {"0 00": 20}
    second = run(backend.submit, submission(circuit=qc, shots=20))
    fake.set_job_status(second, "Succeeded", counts={"1 01": 15, "0 00": 5})
    assert run(backend.status, second).outcome.counts == {"1 01": 15, "0 00": 5}
    run(backend.aclose)


@pytest.mark.parametrize("target", ["quantinuum.sim.h2-1e", "rigetti.sim.qvm"])
def test_other_qir_targets(fake: AzureQuantumFake, tmp_path: Path, target: str) -> None:
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    remote_id = run(backend.submit, submission(target=target))
    job = fake.jobs[remote_id].details
    assert (job["target"], job["inputDataFormat"]) == (target, "qir.v1")
    fake.set_job_status(remote_id, "Succeeded", counts={"00": 60, "11": 40})
    state = run(backend.status, remote_id)
    assert state.outcome.counts == {"00": 60, "11": 40}
    assert state.outcome.method == target
    run(backend.aclose)


def test_ionq_histogram_results_are_parsed(fake: AzureQuantumFake, tmp_path: Path) -> None:
    """A job in IonQ's own format (a histogram of probabilities keyed by integer state): the SDK
    samples counts from it for simulators; keys come back as Qiskit bitstrings."""
    remote_id = fake.add_job(
        input_params={"shots": 200},
        metadata={"qiskit": "True", "num_qubits": "2", "meas_map": "[0, 1]", "metadata": "{}"},
        status="Succeeded",
        counts={"00": 100, "11": 100},
    )
    raw = json.loads(fake.blobs[(f"job-{remote_id}", "rawOutputData")][0])
    assert raw == {"histogram": {"0": 0.5, "3": 0.5}}
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    state = run(backend.status, remote_id)
    assert state.status is JobStatus.succeeded
    assert set(state.outcome.counts) == {"00", "11"}
    assert sum(state.outcome.counts.values()) == 200
    assert state.outcome.details["output_format"] == "ionq.quantum-results.v1"
    run(backend.aclose)


def test_failed_job_keeps_the_azure_code(fake: AzureQuantumFake, tmp_path: Path) -> None:
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    remote_id = run(backend.submit, submission())
    fake.set_job_status(remote_id, "Failed", error_code="InvalidInputData", error_message="secret-ish detail")
    state = run(backend.status, remote_id)
    assert state.status is JobStatus.failed
    assert isinstance(state.error, BackendUnavailable)
    assert state.error.details["azure_code"] == "InvalidInputData"
    assert "secret-ish detail" not in text_of(state.error)  # upstream text stays out
    run(backend.aclose)


def test_cancel(fake: AzureQuantumFake, tmp_path: Path) -> None:
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    remote_id = run(backend.submit, submission())
    run(backend.cancel, remote_id)
    assert fake.jobs[remote_id].details["status"] == "Cancelled"
    assert run(backend.status, remote_id) == RemoteState(JobStatus.cancelled)
    fake.requests.clear()
    run(backend.cancel, remote_id)  # already final: nothing to do, no error
    assert [r.route for r in fake.requests] == ["job.get"]
    assert raises(NotFound, backend.cancel, "00000000-0000-0000-0000-000000000000")
    run(backend.aclose)


def test_entra_id_credential(fake: AzureQuantumFake, tmp_path: Path) -> None:
    token = "eyJ0eXAi.secret-bearer-token.sig"
    fake.bearer_tokens = {token}
    credential = StaticCredential(token)
    backend = AzureQuantumBackend.from_settings(
        settings(tmp_path, **fake.credential_settings_overrides), credential=credential
    )
    remote_id = run(backend.submit, submission())
    fake.set_job_status(remote_id, "Succeeded", counts={"01": 1})
    assert run(backend.status, remote_id).outcome.counts == {"01": 1}

    # ARM first (the workspace's endpoint), then the data plane, each with its own scope.
    assert fake.requests[0].route == "workspace"
    assert ("https://management.azure.com/.default",) in credential.scopes
    assert ("https://quantum.microsoft.com/.default",) in credential.scopes
    # The token reached the fake, over TLS, and only Azure Quantum and ARM; never the blob store.
    for request in fake.requests:
        assert request.tls
        if request.host.endswith(".blob.core.windows.net"):
            assert "Authorization" not in request.headers
        else:
            assert request.headers["Authorization"] == f"Bearer {token}"
            assert "x-ms-quantum-api-key" not in request.headers

    # ... and into no error message.
    for status in (401, 403, 404, 429, 500, 503):
        fake.fail("job.get", status, message=f"echo {token}")
        error = raises(MacroslowError, backend.status, remote_id)
        assert token not in text_of(error)
        fake.clear_faults()
    run(backend.aclose)


def test_credentials_refused_at_arm(fake: AzureQuantumFake, tmp_path: Path) -> None:
    fake.bearer_tokens = {"the-right-token"}
    credential = StaticCredential("a-wrong-token")
    backend = AzureQuantumBackend.from_settings(
        settings(tmp_path, **fake.credential_settings_overrides), credential=credential
    )
    error = raises(BackendUnavailable, backend.submit, submission())
    assert "credentials (401)" in error.message
    assert error.details["azure_code"] == "InvalidAuthenticationToken"
    assert "a-wrong-token" not in text_of(error)
    assert [r.route for r in fake.requests] == ["workspace"]


def test_subscription_resource_group_and_name(fake: AzureQuantumFake, tmp_path: Path) -> None:
    backend = AzureQuantumBackend.from_settings(
        settings(
            tmp_path,
            azure_subscription_id=fake.subscription_id,
            azure_resource_group=fake.resource_group,
            azure_quantum_workspace=fake.workspace,
            azure_quantum_location="East US",
        ),
        credential=StaticCredential("tok"),
    )
    remote_id = run(backend.submit, submission())
    assert remote_id in fake.jobs
    run(backend.aclose)


def test_auto_advance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with azure_fake(monkeypatch, auto_advance=True) as fake:
        fake.counts = {"11": 100}
        backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
        remote_id = run(backend.submit, submission())
        seen = [run(backend.status, remote_id).status for _ in range(3)]
        assert seen == [JobStatus.queued, JobStatus.running, JobStatus.succeeded]
        assert run(backend.status, remote_id).outcome.counts == {"11": 100}
        run(backend.aclose)


def test_a_child_process_reaches_the_fake_through_its_environment(fake: AzureQuantumFake) -> None:
    """What an end-to-end test of the whole server does: settings and routing from the environment."""
    code = (
        "import anyio, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from qiskit import QuantumCircuit\n"
        "from mcp_server.settings import Settings\n"
        "from mcp_server.quantum.azure import AzureQuantumBackend\n"
        "from mcp_server.quantum.backends import Submission\n"
        "qc = QuantumCircuit(1, 1); qc.x(0); qc.measure(0, 0)\n"
        "b = AzureQuantumBackend.from_settings(Settings(_env_file=None))\n"
        "print(anyio.run(b.submit, Submission('j', qc, 10, None, 'ionq.simulator')))\n"
    )
    env = {**os.environ, **fake.env, **fake.settings_env}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == fake.last_job_id


def test_a_circuit_the_target_cannot_run(fake: AzureQuantumFake, tmp_path: Path) -> None:
    """Feed-forward on a Base-profile target: refused while making the QIR, before any job exists."""
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
    qc.measure(1, 1)
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    error = raises(InvalidDocument, backend.submit, submission(circuit=qc))
    assert error.details == {"field": "circuit"}
    assert "ionq.simulator" in error.message
    assert "\n" not in error.message
    assert not fake.jobs
    assert "job.create" not in [r.route for r in fake.requests]
    run(backend.aclose)


def test_unreadable_results(fake: AzureQuantumFake, tmp_path: Path) -> None:
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    remote_id = run(backend.submit, submission())
    fake.set_job_status(remote_id, "Succeeded")
    fake.blobs[(f"job-{remote_id}", "rawOutputData")] = (b"<html>not results</html>", "text/html")
    error = raises(BackendUnavailable, backend.status, remote_id)
    assert error.message == "the Azure Quantum job succeeded but its results could not be read"
    assert "html" not in text_of(error)
    run(backend.aclose)


# -- errors --------------------------------------------------------------------------------------


def test_wrong_api_key(fake: AzureQuantumFake, tmp_path: Path) -> None:
    wrong = fake.connection_string.replace(fake.api_key, "not-the-key-0000")
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, azure_quantum_connection_string=wrong))
    error = raises(BackendUnavailable, backend.submit, submission())
    assert error.message == "Azure Quantum refused the server's credentials (401)"
    assert error.details == {"target": "ionq.simulator", "status": 401, "azure_code": "Unauthorized"}
    assert "not-the-key-0000" not in text_of(error)
    assert fake.api_key not in text_of(error)


def test_injected_401_and_403(fake: AzureQuantumFake, tmp_path: Path) -> None:
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    fake.fail("providers", 401, code="InvalidApiKey")
    error = raises(BackendUnavailable, backend.submit, submission())
    assert (error.details["status"], error.details["azure_code"]) == (401, "InvalidApiKey")
    fake.fail("providers", 403, code="AuthorizationFailed")
    error = raises(BackendUnavailable, backend.submit, submission())
    assert (error.details["status"], error.details["azure_code"]) == (403, "AuthorizationFailed")
    assert fake.api_key not in text_of(error)


def test_unknown_target_and_unknown_job(fake: AzureQuantumFake, tmp_path: Path) -> None:
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    # a name the SDK does not know and the workspace does not offer
    error = raises(NotFound, backend.submit, submission(target="acme.simulator"))
    assert "acme.simulator" in error.message
    # a target the SDK knows, but not enabled in this workspace
    del fake.targets["rigetti"]
    raises(NotFound, backend.submit, submission(target="rigetti.sim.qvm"))
    # a job Azure does not have
    error = raises(NotFound, backend.status, "6f1c6a2e-0000-4000-8000-000000000000")
    assert error.details["azure_code"] == "JobNotFound"
    assert error.details["status"] == 404
    raises(NotFound, backend.status, "../../etc")  # not even a job id: no request
    assert not any("etc" in r.path for r in fake.requests)
    run(backend.aclose)


def test_workspace_not_found(fake: AzureQuantumFake, tmp_path: Path) -> None:
    overrides = dict(fake.credential_settings_overrides)
    overrides["azure_quantum_resource_id"] = overrides["azure_quantum_resource_id"].replace(
        fake.workspace, "no-such-ws"
    )
    backend = AzureQuantumBackend.from_settings(
        settings(tmp_path, **overrides), credential=StaticCredential("t")
    )
    error = raises(NotFound, backend.submit, submission())
    assert error.details["status"] == 404


def test_429_with_retry_after_is_not_retried_inside_the_sdk(fake: AzureQuantumFake, tmp_path: Path) -> None:
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    remote_id = run(backend.submit, submission())
    fake.requests.clear()
    fake.fail("job.get", 429, retry_after=17)
    started = time.monotonic()
    error = raises(RateLimited, backend.status, remote_id)
    assert time.monotonic() - started < 12  # azure-core would have slept 17 s and retried
    assert error.retry_after == 17
    assert error.details["retry_after"] == 17 and error.details["azure_code"] == "TooManyRequests"
    assert [r.route for r in fake.requests] == ["job.get"]

    fake.fail("job.create", 429)  # no Retry-After: the poll cap
    error = raises(RateLimited, backend.submit, submission())
    assert error.retry_after == 30.0

    fake.fail("job.create", 403, code="QuotaExceeded")  # a quota code, whatever the status
    assert raises(RateLimited, backend.submit, submission())
    run(backend.aclose)


@pytest.mark.parametrize(("status", "code"), [(500, "InternalServerError"), (503, "ServiceUnavailable")])
def test_5xx_keeps_the_azure_code(fake: AzureQuantumFake, tmp_path: Path, status: int, code: str) -> None:
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **fake.settings_overrides))
    remote_id = run(backend.submit, submission())
    fake.requests.clear()
    fake.fail("job.get", status, code=code, message="upstream says: internal detail")
    started = time.monotonic()
    error = raises(BackendUnavailable, backend.status, remote_id)
    # The request counts below show the retry bound; the time only that no SDK backoff (minutes) ran.
    assert time.monotonic() - started < 15
    assert error.message == f"Azure Quantum is unavailable ({status})"
    assert error.details == {"azure_job_id": remote_id, "status": status, "azure_code": code}
    assert "internal detail" not in text_of(error)
    assert [r.route for r in fake.requests] == ["job.get", "job.get"]  # one quick retry, no more

    fake.clear_faults()
    fake.fail("blob.put", status)  # the blob store: its own client, the same bound
    fake.requests.clear()
    error = raises(BackendUnavailable, backend.submit, submission())
    assert error.details["status"] == status
    assert [r.route for r in fake.requests].count("blob.put") == 2
    run(backend.aclose)


@pytest.mark.parametrize("route", ["job.get", "blob.get"])
def test_timeout_is_bounded(fake: AzureQuantumFake, tmp_path: Path, route: str) -> None:
    backend = AzureQuantumBackend.from_settings(
        settings(tmp_path, **fake.settings_overrides, azure_quantum_timeout_seconds=0.5)
    )
    remote_id = run(backend.submit, submission())
    if route == "blob.get":
        fake.set_job_status(remote_id, "Succeeded")
    fake.delay(route, 30)
    started = time.monotonic()
    error = raises(BackendUnavailable, backend.status, remote_id)
    elapsed = time.monotonic() - started
    assert elapsed < 15, elapsed  # one 0.5 s read timeout, not the 30 s delay (nor azure-core's 300 s)
    assert error.message == "Azure Quantum did not answer within 0.5 s"
    run(backend.aclose)


@pytest.mark.parametrize("fault", ["503", "delay"])
def test_arm_lookup_is_bounded(fake: AzureQuantumFake, tmp_path: Path, fault: str) -> None:
    """The Entra ID path asks ARM for the workspace first; the same bounds apply there."""
    if fault == "503":
        fake.fail("workspace", 503, code="ServiceUnavailable")
    else:
        fake.delay("workspace", 30)
    backend = AzureQuantumBackend.from_settings(
        settings(tmp_path, **fake.credential_settings_overrides, azure_quantum_timeout_seconds=0.5),
        credential=StaticCredential("t"),
    )
    started = time.monotonic()
    error = raises(BackendUnavailable, backend.submit, submission())
    assert time.monotonic() - started < 15  # not the 30 s delay
    routes = [r.route for r in fake.requests]
    if fault == "503":
        assert error.details["status"] == 503
        assert routes == ["workspace", "workspace"]  # one quick retry (the SDK's own default: 3)
    else:
        assert error.message == "Azure Quantum did not answer within 0.5 s"
        assert routes == ["workspace"]


def test_connection_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with azure_fake(monkeypatch) as f:
        overrides = f.settings_overrides
    # the fake is gone: its port refuses connections
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, **overrides))
    started = time.monotonic()
    error = raises(BackendUnavailable, backend.submit, submission())
    assert time.monotonic() - started < 20  # azure-core's default: 10 retries with backoff
    assert "Azure Quantum" in error.message


# -- no network --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "simulator"),
    [
        ("ionq.simulator", True),
        ("quantinuum.sim.h2-1e", True),
        ("quantinuum.sim.h2-1sc", True),
        ("rigetti.sim.qvm", True),
        ("qci.simulator.noisy", True),
        ("pasqal.sim.emu-tn", True),
        ("ionq.qpu.aria-1", False),
        ("quantinuum.qpu.h2-1", False),
        ("rigetti.qpu.cepheus-1-108q", False),
        ("microsoft.estimator", False),
        ("acme.simulator-ish", False),
    ],
)
def test_is_simulator(target: str, simulator: bool) -> None:
    assert is_simulator(target) is simulator


def test_paid_target_refused_unless_allowed(tmp_path: Path) -> None:
    """No fake running and no proxy: nothing here may touch the network."""
    cs = AzureQuantumFake().connection_string
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, azure_quantum_connection_string=cs))
    backend.check_target("ionq.simulator")
    with pytest.raises(Forbidden) as info:
        backend.check_target("ionq.qpu.aria-1")
    assert "MACROSLOW_AZURE_QUANTUM_ALLOW_QPU" in info.value.message
    raises(Forbidden, backend.submit, submission(target="quantinuum.qpu.h2-1"))  # before any request
    with pytest.raises(InvalidDocument):
        backend.check_target("ionq simulator; rm -rf")
    allowed = AzureQuantumBackend.from_settings(
        settings(tmp_path, azure_quantum_connection_string=cs, azure_quantum_allow_qpu=True)
    )
    allowed.check_target("ionq.qpu.aria-1")
    assert allowed._provider is None  # nothing was built


def test_not_configured_names_the_variables(tmp_path: Path) -> None:
    empty = settings(tmp_path)
    assert not AzureQuantumBackend.configured(empty)
    with pytest.raises(BackendUnavailable) as info:
        AzureQuantumBackend.from_settings(empty)
    for name in (
        "MACROSLOW_AZURE_QUANTUM_CONNECTION_STRING",
        "AZURE_QUANTUM_CONNECTION_STRING",
        "MACROSLOW_AZURE_QUANTUM_RESOURCE_ID",
        "MACROSLOW_AZURE_SUBSCRIPTION_ID",
        "AZURE_RESOURCE_GROUP",
        "MACROSLOW_AZURE_QUANTUM_WORKSPACE",
        "MACROSLOW_AZURE_QUANTUM_LOCATION",
    ):
        assert name in info.value.message
    partial = settings(tmp_path, azure_subscription_id="0b6e4a5c-6a6f-4c7e-9d0e-5b0f5a3a1c01")
    assert not AzureQuantumBackend.configured(partial)
    with pytest.raises(BackendUnavailable) as info:
        AzureQuantumBackend.from_settings(partial)
    assert info.value.details["missing"] == [
        "MACROSLOW_AZURE_RESOURCE_GROUP",
        "MACROSLOW_AZURE_QUANTUM_WORKSPACE",
    ]
    assert "SUBSCRIPTION" not in info.value.message
    assert AzureQuantumBackend.configured(settings(tmp_path, azure_quantum_resource_id="/subscriptions/x"))


def test_configured_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_QUANTUM_RESOURCE_ID", AzureQuantumFake().resource_id)
    assert AzureQuantumBackend.configured(settings(tmp_path))


def test_invalid_settings_are_reported_without_secrets(tmp_path: Path) -> None:
    bad = (
        "SubscriptionId=nope;ResourceGroupName=rg;WorkspaceName=ws;ApiKey=very-secret-key;QuantumEndpoint=x;"
    )
    backend = AzureQuantumBackend.from_settings(settings(tmp_path, azure_quantum_connection_string=bad))
    error = raises(BackendUnavailable, backend.submit, submission())
    assert error.details["reason"] == "invalid_settings"
    assert "very-secret-key" not in text_of(error)
    bad_id = AzureQuantumBackend.from_settings(
        settings(tmp_path, azure_quantum_resource_id="/not/a/resource/id"), credential=StaticCredential("t")
    )
    error = raises(BackendUnavailable, bad_id.submit, submission())
    assert error.details["reason"] == "invalid_settings"


def test_importing_the_adapter_does_not_import_azure() -> None:
    code = (
        "import sys\n"
        "import mcp_server.quantum.azure as a\n"
        "from mcp_server.settings import Settings\n"
        "s = Settings(_env_file=None, azure_quantum_resource_id='/subscriptions/x')\n"
        "b = a.AzureQuantumBackend.from_settings(s)\n"
        "b.check_target('ionq.simulator')\n"
        "loaded = [m for m in sys.modules if m == 'azure' or m.startswith(('azure.', 'qiskit', 'qsharp'))]\n"
        "print(sorted(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout
