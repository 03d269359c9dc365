"""Argument types more than one tool takes, described once for the model that fills them in."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

DOCUMENT = Annotated[
    str, Field(description="The whole MAML document as text (.maml.md), front matter included.")
]
JOB_ID = Annotated[str, Field(max_length=64, description="The job_id run_quantum_circuit returned.")]
