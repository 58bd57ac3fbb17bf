"""Tool calls that models write as text, and the schema-constrained (json_schema) mode.

Small models given native ``tools`` often write the call into ``content`` instead of
``tool_calls``: bare JSON, a fenced ```json block, or Qwen/Hermes-style ``<tool_call>`` tags
(the format of Qwen2.5's chat template). :func:`recover_from_text` finds such calls and keeps
only those naming a declared tool. :func:`action_schema` builds the ``response_format`` for
json_schema mode: a oneOf over ``{"tool": <name>, "arguments": {...}}`` for each tool and
``{"answer": "..."}``, which llama.cpp turns into a grammar the model must follow.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from .limits import parse_json
from .providers import ToolCall

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FENCED = re.compile(r"```(?:json|tool_call|tool)?\s*\n?(.*?)```", re.S)


def _candidates(text: str) -> Iterable[str | list[str]]:
    """Places a call may be written, most specific first. All tagged blocks (and all fenced
    blocks) form one candidate each, so parallel calls written one block per call are kept."""
    tagged = _TAGGED.findall(text)
    if tagged:
        yield tagged
    fenced = _FENCED.findall(text)
    if fenced:
        yield fenced
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        yield stripped
    # a JSON object embedded in prose: from the first "{" to the last "}"
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        yield text[start:end + 1]


def _as_call(obj: Any) -> tuple[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # {"type":"function","function":{"name":..,"arguments":..}}
        obj = obj["function"]
    name = obj.get("name") or obj.get("tool") or obj.get("tool_name")
    if not isinstance(name, str):
        return None
    for key in ("arguments", "parameters", "args", "input"):
        if key in obj:
            return name, obj[key]
    return name, {}


def recover_from_text(content: str | None, tool_names: set[str], id_prefix: str) -> list[ToolCall]:
    """Tool calls written as JSON text in ``content``, restricted to ``tool_names``.

    Returns [] when nothing parses as a call to a declared tool (the content is then an
    answer). Ids are ``f"{id_prefix}_{n}"``. Arguments given as a JSON string are kept as is.
    JSON nested deeper than limits.MAX_DEPTH levels is not a call. Never raises.
    """
    if not content or not tool_names:
        return []
    for cand in _candidates(content):
        items: list[Any] = []
        for block in ([cand] if isinstance(cand, str) else cand):
            try:
                obj = parse_json(block, what="a tool call")
            except ValueError:
                continue
            items.extend(obj if isinstance(obj, list) else [obj])
        calls = []
        for item in items:
            call = _as_call(item)
            if call and call[0] in tool_names:
                name, args = call
                raw = args if isinstance(args, str) else json.dumps(args)
                calls.append(ToolCall(id=f"{id_prefix}_{len(calls) + 1}", name=name, arguments=raw, source="text"))
        if calls:
            return calls
    return []


def action_schema(tools: list[dict[str, Any]], allow_answer: bool = True,
                  answer_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """``response_format`` for json_schema mode over OpenAI function ``tools`` (``[{"type":
    "function", "function": {"name", "description", "parameters"}}]``): ``{"type":
    "json_schema", "json_schema": {"name": "agent_action", "strict": true, "schema": {"oneOf":
    [...]}}}`` with one ``{"tool": <name>, "arguments": <parameters>}`` option per tool and an
    ``{"answer": string}`` option (left out when not ``allow_answer``: the grounding policy
    require_tool always before a tool returned a result). With ``answer_schema`` (an agent's
    response_schema) the answer option is ``{"answer": <answer_schema>}``. Does not raise for
    well-formed tool specs."""
    options: list[dict[str, Any]] = [
        {"type": "object",
         "properties": {"tool": {"const": t["function"]["name"]},
                        "arguments": t["function"].get("parameters") or {"type": "object"}},
         "required": ["tool", "arguments"]}
        for t in tools
    ]
    if allow_answer:
        options.append({"type": "object", "properties": {"answer": answer_schema or {"type": "string"}},
                        "required": ["answer"]})
    return {"type": "json_schema",
            "json_schema": {"name": "agent_action", "strict": True, "schema": {"oneOf": options}}}


def action_instructions(tools: list[dict[str, Any]], structured: bool = False) -> str:
    """System-prompt text (several lines) that describes OpenAI function ``tools`` and the
    expected ``{"tool": ..., "arguments": ...}`` / ``{"answer": ...}`` reply for json_schema mode
    (``structured``: the answer is a JSON object, the agent's response_schema)."""
    lines = ["You can call tools. Reply with exactly one JSON object, either",
             '{"tool": "<tool name>", "arguments": {...}} to call a tool when you need data you do not have, or',
             ('{"answer": {...}} with your final answer as the JSON object described below when you can answer.'
              if structured else '{"answer": "<your final answer to the user>"} when you can answer.'),
             "Greetings, small talk and general knowledge need no tool: answer them directly.",
             "Never guess data that a tool can look up: call the tool first. Tools:"]
    for t in tools:
        fn = t["function"]
        lines.append(f"- {fn['name']}: {fn.get('description', '')} Arguments (JSON Schema): "
                     f"{json.dumps(fn.get('parameters') or {})}")
    return "\n".join(lines)


def parse_action(content: str | None, tool_names: set[str], id_prefix: str) -> tuple[list[ToolCall], str | None]:
    """Parse a json_schema-mode reply: (tool calls, answer). A reply that is not the expected
    JSON (or is nested deeper than limits.MAX_DEPTH levels) falls back to text recovery and then
    to being the answer itself. Never raises."""
    text = (content or "").strip()
    try:
        obj = parse_json(text, what="the reply")
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        if "answer" in obj and "tool" not in obj:   # a string, or a JSON answer (response_schema)
            answer = obj["answer"]
            return [], answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        if isinstance(obj.get("tool"), str):
            args = obj.get("arguments", {})
            raw = args if isinstance(args, str) else json.dumps(args)
            return [ToolCall(id=f"{id_prefix}_1", name=obj["tool"], arguments=raw, source="json_schema")], None
    calls = recover_from_text(text, tool_names, id_prefix)
    if calls:
        return calls, None
    return [], text
