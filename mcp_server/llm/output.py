"""JSON output schemas: checked before a request is sent; answers validated against them.

Error messages name where the answer went wrong and which rule it broke, never the answer's text.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from mcp_server.errors import InvalidDocument


def check_schema(schema: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise InvalidDocument(
            f"the output schema is not a valid JSON Schema (at {where}: {exc.validator} rule)",
            field="output_schema",
        ) from None


def validate_answer(text: str, schema: dict[str, Any]) -> Any:
    """The answer as JSON, valid against the schema, or `InvalidDocument` (field "output")."""
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidDocument(
            "the model's answer is not JSON, so it does not match the output schema", field="output"
        ) from None
    error = next(iter(Draft202012Validator(schema).iter_errors(value)), None)
    if error is not None:
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise InvalidDocument(
            f"the model's answer does not match the output schema: at {where}, "
            f"the '{error.validator}' rule fails",
            field="output",
        )
    return value
