"""The published JSON Schemas (draft 2020-12) that configs are validated against.

:data:`SCHEMAS` maps a name to its schema:

* ``agent.config``: an agent's ``config`` (loop settings, auto-approval, request params);
* ``tool.sql``, ``tool.function``, ``tool.http``, ``tool.memory``, ``tool.knowledge``, ``tool.graph``,
  ``tool.agent``, ``tool.handoff``: a tool's ``config`` per kind (the kind's
  ``check_config`` then checks what a schema cannot say, e.g. header names it refuses);
* ``team.config``: a team's config (pgagent.create_team);
* ``persona.traits``: a persona's traits (names to strings, numbers or booleans);
* ``params.openai``, ``params.anthropic``, ``params.gemini``, ``params.ollama``, ``params.openai.embedding``: request parameters per
  provider and kind, built from :data:`pgagent_core.providers.PARAM_SCHEMAS` (see
  :func:`pgagent_core.providers.check_params`).

Every object schema has ``additionalProperties: false``: unknown keys are refused, naming the
valid ones. Each property carries ``x-expected``, the phrase used in error messages ("an
integer from 1 to 100"). Integers must be written without a fraction (``8``, not ``8.0``).
:func:`validate` raises ONE readable ValueError; :func:`schema` returns a copy for publishing
(SQL: ``pgagent.config_schema(name)``).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from .limits import check_depth, show
from .providers import PARAM_SCHEMAS

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _int(lo: int, hi: int, default: int | None, description: str) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "integer", "minimum": lo, "maximum": hi, "description": description,
                         "x-expected": f"an integer from {lo} to {hi}"}
    if default is not None:
        s["default"] = default
    return s


def _bool(default: bool, description: str) -> dict[str, Any]:
    return {"type": "boolean", "default": default, "description": description, "x-expected": "true or false"}


def _object(title: str, description: str, properties: dict[str, Any], required: list[str] | None = None,
            **extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"$schema": DRAFT, "title": title, "description": description, "type": "object",
                         "properties": properties, "additionalProperties": False}
    if required:
        s["required"] = required
    s.update(extra)
    return s


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")  # = tools.http.METHODS (any case)
_METHOD_PATTERN = "^(?:" + "|".join("".join(f"[{c}{c.lower()}]" for c in m) for m in _HTTP_METHODS) + ")$"
_NO_CRLF = {"not": {"pattern": "[\\r\\n]"}}

AGENT_CONFIG = _object("agent.config", "An agent's config: loop settings, auto-approval and request params.", {
    "max_steps": _int(1, 100, 8, "LLM calls a turn may make before it fails"),
    "max_tool_errors": _int(0, 100, 3, "failed tool calls a turn tolerates before it fails"),
    "history_turns": _int(0, 1000, 20, "earlier turns of the conversation sent to the model"),
    "retry_backoff_ms": _int(0, 60000, 500, "older name of retry_base_ms"),
    "retry_base_ms": _int(0, 60000, 500, "first wait (ms) before retrying a failed LLM call (HTTP 408/409/429/5xx, "
                                         "timeouts, connection errors, malformed replies); doubles each retry, "
                                         "with jitter; at least the provider's Retry-After"),
    "retry_max": _int(0, 10, None, "retries of a failed LLM call before the turn fails (default: the model's "
                                "max_retries)"),
    "max_running_turns": _int(1, 100000, None, "turns of this agent that workers run at once (default: no limit)"),
    "max_result_chars": _int(100, 1000000, 8000, "characters of a tool result sent to the model; more is cut"),
    "auto_approve": {"anyOf": [{"type": "boolean"},
                               {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True}],
                     "default": False, "x-expected": "a boolean or an array of tool names",
                     "description": "true: run calls of tools that require approval without asking; "
                                    "an array: only for the tools named"},
    "params": {"type": "object", "x-expected": "an object of request parameters",
               "description": "request parameters for the agent's model (checked against its provider: "
                              "params.openai, params.anthropic, params.gemini, params.ollama)"},
    "allow_self_approval": _bool(False, "whether a role may approve the tool calls of a turn it started itself"),
    "hook_timeout_ms": _int(10, 60000, 2000, "deadline (ms) of one policy hook call (pgagent.add_hook)"),
    "budget_completion_tokens": _int(1, 1000000, 1024, "completion tokens a budget reserves for an LLM call "
                                                        "whose request sets no max_tokens"),
    "compact_at": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.85,
                   "x-expected": "a number above 0 and at most 1",
                   "description": "share of the model's context_window an estimated prompt may fill before the "
                                  "conversation is compacted (docs/memory.md)"},
    "compact_keep_turns": _int(0, 100, 2, "newest turns a compaction never summarises"),
    "knowledge": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True,
                  "x-expected": "an array of collection names",
                  "description": "knowledge-base collections searched with every user message; the best passages "
                                 "are shown in the system prompt with cite marks (docs/memory.md)"},
    "knowledge_k": _int(1, 20, 3, "passages automatic retrieval shows at most"),
    "memory": _bool(False, "automatic recall: show the memories most relevant to the user message in the "
                           "system prompt (docs/memory.md)"),
    "memory_k": _int(1, 100, 5, "memories automatic recall shows at most"),
    "memory_min_similarity": {"type": "number", "minimum": -1, "maximum": 1, "default": 0,
                              "x-expected": "a number from -1 to 1",
                              "description": "cosine similarity a memory needs to be recalled automatically"},
    "memory_model": {"type": "string", "minLength": 1, "x-expected": "the name of an embedding model",
                     "description": "the embedding model of automatic recall (default: the tenant's default "
                                    "embedding model)"},
    "require_tool": {"type": "string", "enum": ["never", "auto", "always"], "default": "never",
                     "x-expected": "one of never, auto, always",
                     "description": "grounding policy: auto = an answer stating numbers no tool result or message "
                                    "shows is sent back; always = also one before any tool result; both = also an "
                                    "unreadable answer and one right after a failed call or an empty result "
                                    "(at most grounding_retries per turn; docs/evals.md)"},
    "grounding_retries": _int(0, 5, 2, "answers of a turn the grounding policy may send back"),
    "self_check": _bool(False, "send the first answer given after a tool result back once to be checked against "
                               "the results (docs/evals.md)"),
    "response_schema": {"type": "object", "x-expected": 'a JSON Schema of an object ({"type": "object", ...})',
                        "description": "the final answer must be JSON valid against this schema: native structured "
                                       "output where the provider has it, validated and sent back otherwise "
                                       "(docs/multi-agent.md#structured-answers)"},
    "response_schema_retries": _int(0, 5, 2, "answers of a turn that do not match response_schema and are sent "
                                             "back before the turn fails"),
})

TOOL_SQL = _object("tool.sql", "Config of an sql tool: a read-only query run as pgagent_sandbox.", {
    "query": {"type": ["string", "null"], "pattern": "\\S",
              "x-expected": "a non-empty SQL query using $1..$n (or null: the model writes the query)",
              "description": "a fixed query; without it the model supplies the SQL in an argument named query"},
    "args": {"type": "array", "items": {"type": "string"}, "default": [], "x-expected": "an array of argument names",
             "description": "the arguments that fill $1..$n, in order"},
    "max_rows": _int(1, 100000, 100, "cap on returned rows"),
    "search_path": {"type": "string", "default": "public", "x-expected": 'a string such as "public" or "demo, public"',
                    "description": "the schemas the query sees"},
    "hints": _bool(True, "add total_rows and notes (truncated rows, NULLs sorted first) to results"),
    "schema": {"type": "boolean", "x-expected": "true or false",
               "default": False,
               "description": "when the model writes the query: show it the tables it may read with column types, "
                              "sample values and which have NULLs (docs/evals.md)"},
    "autofix": _bool(True, "when the model writes the query: run the mechanical fix of a failed query (a year or month of a "
                            "date column, a misplaced FROM, an aggregate beside a column) and of a text value that differs "
                            "only in case, and say so in the result's notes (docs/evals.md)"),
    "examples": _bool(False, "when the model writes the query: add few-shot query examples (SQL idioms on a made-up "
                             "table) to the tool's description (docs/evals.md)"),
})

TOOL_FUNCTION = _object("tool.function", "Config of a function tool: one SQL function called as a chosen role.", {
    "function": {"type": "string", "minLength": 1,
                 "x-expected": "a non-empty string naming the SQL function (optionally schema-qualified)",
                 "description": "the function to call, e.g. myschema.fn"},
    "run_as": {"type": "string", "minLength": 1, "default": "pgagent_sandbox", "x-expected": "a role name",
               "description": "the role the call runs as"},
}, ["function"])

TOOL_HTTP = _object("tool.http", "Config of an http tool: one request to a host on the tenant's egress allowlist.", {
    "url": {"type": ["string", "null"], "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]",
            "x-expected": "an http:// or https:// URL (with {name} placeholders for arguments)",
            "description": "without it the model supplies the URL in an argument named url"},
    "method": {"type": "string", "pattern": _METHOD_PATTERN, "default": "GET",
               "x-expected": "one of " + ", ".join(_HTTP_METHODS), "description": "the HTTP method"},
    "headers": {"type": "object", "default": {},
                "propertyNames": {"pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", **_NO_CRLF},
                "additionalProperties": {"type": "string", **_NO_CRLF},
                "x-expected": "an object of header names to string values", "description": "static request headers"},
    "body_arg": {"type": ["string", "null"], "x-expected": "an argument name",
                 "description": "(POST, PUT, PATCH) the argument sent as the body"},
    "max_bytes": {**_int(1, 50000000, 1000000, "cap on the response body (bytes)"), "type": ["integer", "null"]},
    "max_redirects": {**_int(0, 10, 3, "redirects followed"), "type": ["integer", "null"]},
})

TOOL_MEMORY = _object("tool.memory", "Config of a memory tool: the agent remembers or recalls (docs/memory.md).", {
    "action": {"type": "string", "enum": ["remember", "recall"], "x-expected": "remember or recall",
               "description": "remember: store the argument content (and importance); recall: search with the "
                              "argument query (and k)"},
    "scope": {"type": "string", "enum": ["conversation", "user", "agent"], "default": "user",
              "x-expected": "conversation, user or agent",
              "description": "(remember) the scope of the memories it writes"},
    "k": _int(1, 100, 5, "(recall) memories returned when the call gives no k"),
    "min_similarity": {"type": "number", "minimum": -1, "maximum": 1, "default": 0,
                       "x-expected": "a number from -1 to 1", "description": "(recall) cosine similarity needed"},
    "model": {"type": "string", "minLength": 1, "x-expected": "the name of an embedding model",
              "description": "the embedding model (default: the tenant's default embedding model)"},
}, ["action"])

TOOL_KNOWLEDGE = _object("tool.knowledge", "Config of a knowledge tool: search knowledge-base collections "
                                            "(docs/memory.md).", {
    "collections": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": True,
                    "x-expected": "an array of collection names",
                    "description": "the collections searched together"},
    "k": _int(1, 20, 5, "passages returned when the call gives no k"),
    "mode": {"type": "string", "enum": ["hybrid", "vector", "text"], "default": "hybrid",
             "x-expected": "hybrid, vector or text",
             "description": "hybrid: vector and full-text ranks fused (RRF, k = 60)"},
    "filter": {"type": "object", "default": {}, "x-expected": "a JSON object",
               "description": "what the document metadata must contain (jsonb @>)"},
}, ["collections"])

TOOL_GRAPH = _object("tool.graph", "Config of a graph tool: the knowledge graph around an entity (docs/memory.md).", {
    "depth": _int(1, 5, 2, "relations followed when the call gives no depth"),
    "max_rows": _int(1, 1000, 50, "neighbours returned at most"),
})

_AGENT_NAME = {"type": "string", "minLength": 1, "maxLength": 63, "x-expected": "the name of an agent of the tenant",
               "description": "the agent the call goes to"}
TOOL_AGENT = _object("tool.agent", "Config of an agent tool: a child turn of another agent answers the call "
                                   "(docs/multi-agent.md).", {
    "agent": _AGENT_NAME,
    "max_depth": _int(1, 10, 3, "how deep a chain of agent calls may go (the calling turn at 0)"),
}, required=["agent"])

TOOL_HANDOFF = _object("tool.handoff", "Config of a handoff tool: the conversation moves to another agent "
                                       "(docs/multi-agent.md).", {"agent": _AGENT_NAME}, required=["agent"])

TEAM_CONFIG = _object("team.config", "A team's config (pgagent.create_team, docs/multi-agent.md#teams).", {
    "supervisor": {**_AGENT_NAME, "description": "supervisor mode: the agent that delegates to the members"},
    "judge": {**_AGENT_NAME, "description": "debate mode: the agent that decides after the last round"},
    "quorum": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 2 / 3,
               "x-expected": "a number above 0 and at most 1",
               "description": "consensus mode: the share of members whose votes must agree"},
    "max_rounds": _int(1, 20, 3, "rounds a discussion may take"),
    "instructions": {"type": "string", "maxLength": 4000, "x-expected": "a text",
                     "description": "added to every message a member is asked"},
})

PERSONA_TRAITS = {"$schema": DRAFT, "title": "persona.traits",
                  "description": "A persona's traits, e.g. {\"tone\": \"dry\", \"verbosity\": 2}.",
                  "type": "object",
                  "additionalProperties": {"type": ["string", "number", "boolean"],
                                           "x-expected": "a string, number or boolean"}}


def _params(key: str, subject: str) -> dict[str, Any]:
    return _object(f"params.{key}", f"Request parameters allowed for {subject} (null: not set).",
                   copy.deepcopy(PARAM_SCHEMAS[key]))


#: name -> JSON Schema (draft 2020-12). Do not mutate; :func:`schema` returns copies.
SCHEMAS: dict[str, dict[str, Any]] = {
    "agent.config": AGENT_CONFIG,
    "tool.sql": TOOL_SQL,
    "tool.function": TOOL_FUNCTION,
    "tool.http": TOOL_HTTP,
    "tool.memory": TOOL_MEMORY,
    "tool.knowledge": TOOL_KNOWLEDGE,
    "tool.graph": TOOL_GRAPH,
    "tool.agent": TOOL_AGENT,
    "tool.handoff": TOOL_HANDOFF,
    "team.config": TEAM_CONFIG,
    "persona.traits": PERSONA_TRAITS,
    "params.openai": _params("openai", "provider openai"),
    "params.anthropic": _params("anthropic", "provider anthropic"),
    "params.gemini": _params("gemini", "provider gemini"),
    "params.ollama": _params("ollama", "provider ollama"),
    "params.openai.embedding": _params("openai.embedding", "openai embedding models"),
}

# name -> (message prefix, how a key is named after it: "colon" = 'prefix: key', "dot" =
# 'prefix.key', "quoted" = 'prefix: "key"'), and for params the subject of "is not allowed for".
_STYLE: dict[str, tuple[str, str]] = {
    "agent.config": ("agent config", "colon"),
    "tool.sql": ("config", "dot"),
    "tool.function": ("config", "dot"),
    "tool.http": ("config", "dot"),
    "tool.memory": ("config", "dot"),
    "tool.knowledge": ("config", "dot"),
    "tool.graph": ("config", "dot"),
    "tool.agent": ("config", "dot"),
    "tool.handoff": ("config", "dot"),
    "team.config": ("team config", "colon"),
    "persona.traits": ("persona traits", "quoted"),
    "params.openai": ("params", "quoted"),
    "params.anthropic": ("params", "quoted"),
    "params.gemini": ("params", "quoted"),
    "params.ollama": ("params", "quoted"),
    "params.openai.embedding": ("params", "quoted"),
}
_PARAMS_SUBJECT = {"params.openai": "provider openai", "params.anthropic": "provider anthropic",
                   "params.gemini": "provider gemini", "params.ollama": "provider ollama",
                   "params.openai.embedding": "openai embedding models"}


def _strict_int(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


#: Draft 2020-12 where "integer" means a JSON number without a fraction (8, not 8.0).
StrictValidator = jsonschema.validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_int))


@lru_cache(maxsize=None)
def _validator(name: str) -> Any:
    return StrictValidator(SCHEMAS[name])


def schema(name: str) -> dict[str, Any]:
    """A deep copy of the published JSON Schema ``name`` (a key of :data:`SCHEMAS`). Raises
    ValueError naming the valid names for an unknown one."""
    if name not in SCHEMAS:
        raise ValueError(f"no config schema {name!r}; valid: {', '.join(sorted(SCHEMAS))}")
    return copy.deepcopy(SCHEMAS[name])


def _quote(keys: list[str]) -> str:
    return ", ".join(f'"{k}"' for k in keys)


def validate(name: str, value: Any, *, what: str | None = None) -> None:
    """Raise ValueError with ONE readable message unless ``value`` is valid against the schema
    ``name`` (a key of :data:`SCHEMAS`); returns None when it is.

    Messages start with ``what`` (default: "agent config", "config" for tools, "persona
    traits", "params") and name the key, the valid keys or the expected value, e.g.
    ``agent config: unknown key "max_step"; valid keys: allow_self_approval, ...``,
    ``agent config: auto_approve must be a boolean or an array of tool names, got "yes"``,
    ``config.max_rows must be an integer from 1 to 100000, got 0``,
    ``params: "messages" is not allowed for provider openai; allowed: frequency_penalty, ...``.
    Values nested deeper than limits.MAX_DEPTH levels are refused. An unknown ``name`` raises
    ValueError too.
    """
    if name not in SCHEMAS:
        raise ValueError(f"no config schema {name!r}; valid: {', '.join(sorted(SCHEMAS))}")
    spec = SCHEMAS[name]
    prefix, style = _STYLE[name]
    prefix = what or prefix

    def label(key: str) -> str:
        return {"colon": f"{prefix}: {key}", "dot": f"{prefix}.{key}"}.get(style, f'{prefix}: "{key}"')

    if not isinstance(value, dict):
        raise ValueError(f"{prefix} must be a JSON object, got {show(value)}")
    check_depth(value, what=prefix)
    props: dict[str, Any] = spec.get("properties", {})
    if spec.get("additionalProperties") is False:
        unknown = [k for k in value if k not in props]
        if unknown:
            valid = ", ".join(sorted(props))
            if name in _PARAMS_SUBJECT:
                verb = "is" if len(unknown) == 1 else "are"
                raise ValueError(f"{prefix}: {_quote(unknown)} {verb} not allowed for {_PARAMS_SUBJECT[name]}; "
                                 f"allowed: {valid}")
            noun = "key" if len(unknown) == 1 else "keys"
            raise ValueError(f"{prefix}: unknown {noun} {_quote(unknown)}; valid keys: {valid}")
    for key in spec.get("required", []):
        if key not in value:
            raise ValueError(f"{label(key)} is required: {props[key].get('x-expected', 'a value')}")
    errors = list(_validator(name).iter_errors(value))
    if not errors:
        return
    order = {k: i for i, k in enumerate(value)}
    errors.sort(key=lambda e: (order.get(e.absolute_path[0], -1) if e.absolute_path else -1, len(e.absolute_path)))
    err = errors[0]
    if not err.absolute_path:
        raise ValueError(f"{prefix}: {err.message}")
    key = str(err.absolute_path[0])
    sub = props.get(key)
    if sub is None and isinstance(spec.get("additionalProperties"), dict):
        sub = spec["additionalProperties"]
    expected = (sub or {}).get("x-expected")
    if expected is None:
        where = ".".join(str(p) for p in err.absolute_path)
        raise ValueError(f"{label(where)}: {err.message}")
    raise ValueError(f"{label(key)} must be {expected}, got {show(value[key])}")


__all__ = ["DRAFT", "SCHEMAS", "StrictValidator", "schema", "validate"]
