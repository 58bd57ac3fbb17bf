"""Checking a model's tool call before anything runs: known tool, JSON arguments, JSON Schema.

Validation uses the ``jsonschema`` library with the draft the schema declares (``$schema``),
defaulting to Draft 2020-12. Validators are cached per schema text.

Tool schemas must be self-contained: :func:`check_schema` refuses any ``$ref``,
``$dynamicRef`` or ``$recursiveRef`` that is not local (``#...``), an absolute ``$id`` and a
``$schema`` other than the json-schema.org metaschemas the library knows. Whatever gets past
registration, validators never retrieve anything: they are built with a reference resolver
(jsonschema < 4.18: a RefResolver without remote resolution) or registry (jsonschema >= 4.18:
``referencing.Registry`` whose ``retrieve`` refuses) that only knows the schema itself and the
bundled metaschemas, so a remote reference is a validation failure, never a network request.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from .limits import MAX_DEPTH, check_depth, clean_json, parse_json

REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

try:  # jsonschema >= 4.18
    import referencing
    import referencing.exceptions

    def _refuse(uri: str) -> Any:
        raise referencing.exceptions.NoSuchResource(ref=uri)

    _REGISTRY: Any = referencing.Registry(retrieve=_refuse)  # type: ignore[call-arg]

    def _build(cls: Any, schema: dict[str, Any]) -> Any:
        return cls(schema, registry=_REGISTRY)

except ImportError:  # jsonschema 4.10 (Debian bookworm): RefResolver
    referencing = None  # type: ignore[assignment]

    class _LocalResolver(jsonschema.RefResolver):  # type: ignore[misc,name-defined]
        """Resolves references within the schema and the bundled metaschemas only."""

        def resolve_remote(self, uri: str) -> Any:
            """Never fetch: raises RefResolutionError for any URI."""
            raise jsonschema.RefResolutionError(f"remote reference {uri!r} is not resolved")

    def _build(cls: Any, schema: dict[str, Any]) -> Any:
        return cls(schema, resolver=_LocalResolver.from_schema(schema, id_of=cls.ID_OF, handlers={}))


def _cls(schema: dict[str, Any]) -> Any:
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


@lru_cache(maxsize=256)
def _validator(schema_text: str) -> Any:
    schema = json.loads(schema_text)
    return _build(_cls(schema), schema)


def remote_refs(schema: Any) -> list[str]:
    """Problems that make ``schema`` not self-contained, as messages: every ``$ref`` /
    ``$dynamicRef`` / ``$recursiveRef`` string (at any depth, wherever it appears) not starting
    with ``#``, and every ``$id`` that is an absolute URI. Iterative; [] when there are none."""
    problems: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if k in REF_KEYS and isinstance(v, str) and not v.startswith("#"):
                    problems.append(f"{k} {v!r} is not a local reference (#...)")
                elif k == "$id" and isinstance(v, str) and (_SCHEME.match(v) or v.startswith("//")):
                    problems.append(f"$id {v!r} is an absolute URI")
                if isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(node, list):
            stack.extend(x for x in node if isinstance(x, (dict, list)))
    return problems


def check_schema(schema: Any, what: str = "parameters") -> None:
    """Raise ValueError with a readable message unless ``schema`` is a valid, self-contained
    JSON Schema for an object of arguments (``{"type": "object", ...}``): nested at most
    limits.MAX_DEPTH levels, only local references (``"$ref": "#/$defs/x"``; a remote one
    would make the backend fetch a URL while validating, around the egress allowlist), no
    absolute ``$id``, and a ``$schema`` (if any) that is a json-schema.org draft the library
    knows. Messages start with ``what`` (a tool's ``parameters``, an agent's ``response_schema``).
    Returns None."""
    if not isinstance(schema, dict):
        raise ValueError(f"{what} must be a JSON Schema object")
    check_depth(schema, MAX_DEPTH, what)
    if schema.get("type") != "object":
        raise ValueError(f'{what} must describe an object ("type": "object")')
    if "$schema" in schema and (not isinstance(schema["$schema"], str) or
                                jsonschema.validators.validator_for(schema, default=None) is None):
        raise ValueError(f"{what}: $schema {schema['$schema']!r} is not a known JSON Schema draft; use "
                         f"\"https://json-schema.org/draft/2020-12/schema\" or leave it out")
    problems = remote_refs(schema)
    if problems:
        raise ValueError(f"{what} must be self-contained: {problems[0]}; remote references are not allowed "
                         f"(put the definitions under \"$defs\" and refer to them as \"#/$defs/name\")")
    try:
        _cls(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"{what} is not a valid JSON Schema: {e.message}") from None


def check_call(tools: list[dict[str, Any]], tool: dict[str, Any] | None, name: str,
               raw_arguments: str) -> tuple[dict[str, Any] | None, str | None]:
    """Validate one call. Returns (arguments, None) when valid, else (None, message) where the
    message is written for the model (it is sent back as the tool's result so it can retry).

    ``raw_arguments`` is JSON text (blank means ``{}``); arguments nested deeper than
    limits.MAX_DEPTH levels, NaN/Infinity, a non-object, a schema violation, or a schema that
    cannot be used (e.g. a remote reference, which is never fetched) give a message. The
    arguments returned are cleaned (limits.clean_json: no NUL, no lone surrogates). Never
    raises for bad input.
    """
    if tool is None:
        available = ", ".join(sorted(t["name"] for t in tools)) or "none"
        return None, f"unknown tool {name!r}; available tools: {available}"
    if raw_arguments is None:
        raw_arguments = ""
    if not isinstance(raw_arguments, str):
        return None, f"arguments for {name} must be JSON text, got {type(raw_arguments).__name__}"
    try:
        args = parse_json(raw_arguments, MAX_DEPTH, f"arguments for {name}") if raw_arguments.strip() else {}
    except json.JSONDecodeError as e:
        return None, f"arguments for {name} are not valid JSON ({e}); send a JSON object"
    except ValueError as e:  # too deep, NaN/Infinity, numbers out of range
        return None, f"{e}; send a {'flatter ' if 'nested deeper' in str(e) else ''}JSON object"
    if not isinstance(args, dict):
        return None, f"arguments for {name} must be a JSON object, got {type(args).__name__}"
    args = clean_json(args)
    try:
        validator = _validator(json.dumps(tool["parameters"], sort_keys=True))
        error = best_match(validator.iter_errors(args))
    except Exception as e:  # e.g. an unresolvable (remote) reference: refused, never fetched
        return None, (f"the arguments for {name} cannot be checked: its JSON Schema cannot be used "
                      f"({type(e).__name__}: {str(e)[:200]}); tell the user the tool is misconfigured")
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return None, f"arguments for {name} do not match its JSON Schema at {where}: {error.message}"
    return args, None


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```$", re.S)


def check_answer(schema: dict[str, Any], content: str | None) -> tuple[str | None, str | None]:
    """Check a final answer against an agent's ``response_schema``. Returns (the answer as
    compact JSON text, None) when it is JSON valid against ``schema``, else (None, a message
    for the model: what is wrong and where). A Markdown code fence around the JSON (```json
    ... ```) is taken off first (small models add one). Never raises for bad input."""
    text = (content or "").strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    if not text:
        return None, "the answer is empty; reply with a JSON value that matches the schema"
    try:
        value = parse_json(text, MAX_DEPTH, "the answer")
    except ValueError as e:
        return None, f"the answer is not valid JSON ({e}); reply with JSON only, no prose"
    value = clean_json(value)
    try:
        error = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value))
    except Exception as e:  # a schema that cannot be used (refused when the agent was saved)
        return None, f"the response_schema cannot be used ({type(e).__name__}: {str(e)[:200]})"
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return None, f"the answer does not match the response_schema at {where}: {error.message}"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")), None
