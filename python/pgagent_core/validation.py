"""Checking a model's tool call before anything runs: known tool, JSON arguments, JSON Schema.

Validation uses the ``jsonschema`` library with the draft the schema declares (``$schema``),
defaulting to Draft 2020-12. Validators are cached per schema text.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match


@lru_cache(maxsize=256)
def _validator(schema_text: str) -> Any:
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def check_schema(schema: Any) -> None:
    """Raise ValueError with a readable message unless ``schema`` is a valid JSON Schema for an
    object of arguments (``{"type": "object", ...}``)."""
    if not isinstance(schema, dict):
        raise ValueError("parameters must be a JSON Schema object")
    if schema.get("type") != "object":
        raise ValueError('parameters must describe an object ("type": "object")')
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"parameters is not a valid JSON Schema: {e.message}") from None


def check_call(tools: list[dict[str, Any]], tool: dict[str, Any] | None, name: str,
               raw_arguments: str) -> tuple[dict[str, Any] | None, str | None]:
    """Validate one call. Returns (arguments, None) when valid, else (None, message) where the
    message is written for the model (it is sent back as the tool's result so it can retry)."""
    if tool is None:
        available = ", ".join(sorted(t["name"] for t in tools)) or "none"
        return None, f"unknown tool {name!r}; available tools: {available}"
    try:
        args = json.loads(raw_arguments) if raw_arguments.strip() else {}
    except ValueError as e:
        return None, f"arguments for {name} are not valid JSON ({e}); send a JSON object"
    if not isinstance(args, dict):
        return None, f"arguments for {name} must be a JSON object, got {type(args).__name__}"
    error = best_match(_validator(json.dumps(tool["parameters"], sort_keys=True)).iter_errors(args))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return None, f"arguments for {name} do not match its JSON Schema at {where}: {error.message}"
    return args, None
