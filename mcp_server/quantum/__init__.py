"""Quantum circuits as jobs: parsing (`circuits`), the local Aer simulator (`local`), Azure Quantum
(`azure`), job records (`store`) and the job service tying them together (`service`).

Nothing here imports qiskit or the Azure SDK at import time; they load on the first quantum call.
"""


def import_qiskit() -> None:
    """Import qiskit on the calling thread, which must be one that lives as long as the process (the
    event loop's). qiskit's compiled core, first imported on a short-lived worker thread, crashes
    the process (SIGSEGV) when used later from other threads (seen with qiskit 2.6), so the first
    quantum call imports it here, on the loop, before any work is handed to threads."""
    import logging

    import qiskit
    import qiskit.qasm2
    import qiskit.qasm3  # noqa: F401

    # qiskit logs every transpiler pass at INFO: noise in the server's log (stderr) at that level.
    logging.getLogger("qiskit").setLevel(logging.WARNING)
