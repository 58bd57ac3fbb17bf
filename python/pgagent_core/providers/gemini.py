"""Google Gemini API (``generateContent`` / ``streamGenerateContent``), translated to and from
OpenAI chat-completions terms.

References (Gemini API, v1beta REST):

* https://ai.google.dev/api/generate-content -- ``POST {base}/models/{model}:generateContent``
  and ``:streamGenerateContent?alt=sse`` (server-sent events, each a partial
  GenerateContentResponse; ``usageMetadata`` in the chunks is cumulative, the last one counts);
  the key goes in the ``x-goog-api-key`` header (never the URL, so error messages cannot show it).
* https://ai.google.dev/gemini-api/docs/function-calling -- ``tools[].functionDeclarations``
  (``parametersJsonSchema`` takes a JSON Schema as is), the model's ``functionCall`` parts
  (``name``, ``args``, optional ``id``) answered by ``functionResponse`` parts (``name``,
  ``response`` object: ``output`` or ``error``) in the next ``user`` content;
  ``toolConfig.functionCallingConfig.mode`` AUTO / ANY / NONE (+ ``allowedFunctionNames``).
* https://ai.google.dev/gemini-api/docs/thought-signatures -- a ``functionCall`` part may carry
  a ``thoughtSignature`` that must be sent back with it (Gemini 3 refuses a history without
  it). It is kept on the tool call as ``extra_content.google.thought_signature`` (the shape
  Gemini's own OpenAI-compatible endpoint uses), recorded in the llm_call step, and returned; the
  first call of a model turn without one (written by another provider before a handoff) gets the
  documented placeholder ``skip_thought_signature_validator``.
* https://ai.google.dev/gemini-api/docs/structured-output -- ``generationConfig.responseMimeType
  = "application/json"`` with ``responseJsonSchema``.

Roles: OpenAI ``system`` messages become ``systemInstruction``; ``assistant`` becomes ``model``;
``tool`` results become ``functionResponse`` parts of a ``user`` content (consecutive results
share one content, as the API expects for parallel calls).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from . import Reply, ToolCall, allowed, describe, malformed, named_call, obj, opt_str, req_str, stream_error, tokens
from ..limits import clean_text

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
#: finishReason -> OpenAI finish_reason (https://ai.google.dev/api/generate-content#FinishReason).
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
           "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
           "IMAGE_SAFETY": "content_filter", "LANGUAGE": "content_filter", "OTHER": "stop"}
_CHOICE = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
#: The placeholder the thought-signatures page documents for a first function call that has no
#: signature (a history Gemini did not write), so that Gemini 3 does not refuse the request.
NO_SIGNATURE = "skip_thought_signature_validator"


def model_path(model_name: str) -> str:
    """The model's resource name in a URL: ``models/<name>`` unless it already names a
    resource (``models/...``, ``tunedModels/...``); URL-quoted (``/`` kept)."""
    name = model_name if model_name.startswith(("models/", "tunedModels/")) else f"models/{model_name}"
    return quote(name, safe="/-._~")


def _response_object(content: str | None) -> dict[str, Any]:
    """A functionResponse ``response``: the tool message's JSON text as ``{"output": value}``,
    or ``{"error": ...}`` when the loop reported an error (``{"error": ...}`` alone)."""
    try:
        value = json.loads(content or "null")
    except ValueError:
        value = content
    if isinstance(value, dict) and set(value) == {"error"}:
        return {"error": value["error"]}
    return {"output": value}


def _contents(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}   # tool_call_id -> function name (functionResponse needs the name)
    for m in messages:
        role, text = m["role"], m.get("content") or ""
        if role == "system":
            if text:
                system.append(text)
            continue
        if role == "tool":
            part = {"functionResponse": {"name": names.get(m.get("tool_call_id") or "", "tool"),
                                         "response": _response_object(text)}}
            call_id = m.get("tool_call_id")
            if call_id and not str(call_id).startswith("call_"):
                part["functionResponse"]["id"] = call_id
            if out and out[-1]["role"] == "user" and all("functionResponse" in p for p in out[-1]["parts"]):
                out[-1]["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
            continue
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        if role == "assistant":
            for i, tc in enumerate(m.get("tool_calls") or []):
                fn = tc["function"]
                names[tc["id"]] = fn["name"]
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = {}
                call: dict[str, Any] = {"name": fn["name"], "args": args if isinstance(args, dict) else {}}
                if tc.get("id") and not str(tc["id"]).startswith("call_"):
                    call["id"] = tc["id"]
                part = {"functionCall": call}
                sig = ((tc.get("extra_content") or {}).get("google") or {}).get("thought_signature")
                if isinstance(sig, str) and sig:
                    part["thoughtSignature"] = sig
                elif i == 0:   # a call Gemini did not write (another provider's, before a handoff)
                    part["thoughtSignature"] = NO_SIGNATURE
                parts.append(part)
        if parts:
            out.append({"role": "model" if role == "assistant" else "user", "parts": parts})
    return system, out


def build_request(model: dict[str, Any], messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                  params: dict[str, Any], api_key: str | None,
                  response_format: dict[str, Any] | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, body) for POST ``{base_url}/models/{model}:generateContent``.

    ``params`` (OpenAI names, ``ALLOWED_PARAMS["gemini"]``) become ``generationConfig`` fields:
    temperature, top_p -> topP, top_k -> topK, max_tokens -> maxOutputTokens (tokens), stop ->
    stopSequences, seed, presence_penalty, frequency_penalty, thinking_budget ->
    thinkingConfig.thinkingBudget (tokens); tool_choice -> toolConfig (only with tools). A
    json_schema ``response_format`` sets responseMimeType application/json and
    responseJsonSchema. Does not raise for bad params."""
    system, contents = _contents(messages)
    p = allowed(params, "gemini")
    gen: dict[str, Any] = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"),
                         ("max_tokens", "maxOutputTokens"), ("seed", "seed"), ("presence_penalty", "presencePenalty"),
                         ("frequency_penalty", "frequencyPenalty")):
        if ours in p:
            gen[theirs] = p[ours]
    if "stop" in p:
        gen["stopSequences"] = [p["stop"]] if isinstance(p["stop"], str) else p["stop"]
    if "thinking_budget" in p:
        gen["thinkingConfig"] = {"thinkingBudget": p["thinking_budget"]}
    if response_format and response_format.get("type") == "json_schema":
        gen["responseMimeType"] = "application/json"
        gen["responseJsonSchema"] = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    elif response_format and response_format.get("type") == "json_object":
        gen["responseMimeType"] = "application/json"
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    if tools:
        body["tools"] = [{"functionDeclarations": [
            {"name": t["function"]["name"], "description": t["function"].get("description", ""),
             "parametersJsonSchema": t["function"].get("parameters") or {"type": "object"}} for t in tools]}]
        choice = p.get("tool_choice")
        if isinstance(choice, str):
            body["toolConfig"] = {"functionCallingConfig": {"mode": _CHOICE[choice]}}
        elif isinstance(choice, dict):
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY",
                                                            "allowedFunctionNames": [choice["function"]["name"]]}}
    if gen:
        body["generationConfig"] = gen
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["x-goog-api-key"] = api_key
    base = model["base_url"].rstrip("/")
    return f"{base}/{model_path(model['model_name'])}:generateContent", headers, body


#: Body fields of a streamed request: none (streaming is a different method, see :func:`stream_url`).
STREAM_FIELDS: dict[str, Any] = {}


def stream_url(url: str) -> str:
    """The streaming method's URL for a :func:`build_request` URL (``:streamGenerateContent``
    with ``alt=sse``, so the reply is server-sent events rather than one JSON array)."""
    return url.removesuffix(":generateContent") + ":streamGenerateContent?alt=sse"


def _parts(parts: Any, where: str, texts: list[str], thoughts: list[str], calls: list[ToolCall]) -> None:
    if parts is None:
        return
    if not isinstance(parts, list):
        raise malformed(f"{where} must be an array of parts, got {describe(parts)}")
    for i, part in enumerate(parts):
        w = f"{where}[{i}]"
        part = obj(part, w)
        if "text" in part:
            text = req_str(part["text"], f"{w}.text")
            (thoughts if part.get("thought") is True else texts).append(text)
        elif "functionCall" in part:
            fc = obj(part["functionCall"], f"{w}.functionCall")
            if isinstance(fc.get("args"), str):
                raise malformed(f"{w}.functionCall.args must be an object, got {describe(fc['args'])}")
            sig = opt_str(part.get("thoughtSignature"), f"{w}.thoughtSignature")
            calls.append(named_call(fc.get("name"), fc.get("args"), opt_str(fc.get("id"), f"{w}.functionCall.id"), w,
                                    ".functionCall.name", ".functionCall.args",
                                    extra={"google": {"thought_signature": sig}} if sig else None))
        # other parts (inlineData, executableCode, ...) carry nothing the loop uses


def parse_response(data: dict[str, Any]) -> Reply:
    """Normalize a GenerateContentResponse into a :class:`Reply`: the first candidate's text
    parts joined as content (``thought`` parts as reasoning), ``functionCall`` parts as tool
    calls (finish_reason ``tool_calls``), finishReason mapped (STOP -> stop, MAX_TOKENS ->
    length, SAFETY and other blocks -> content_filter), usageMetadata.promptTokenCount as
    prompt tokens and candidatesTokenCount + thoughtsTokenCount as completion tokens (thinking
    is billed as output), modelVersion as the model. Every string is cleaned.

    Raises ProviderError: kind ``refused`` (not retryable) when the prompt was blocked
    (``promptFeedback.blockReason`` and no candidate); kind ``malformed`` (retryable) naming the
    field when anything has the wrong type, or when finishReason is MALFORMED_FUNCTION_CALL (the
    model wrote a call the API could not parse: asking again may help)."""
    from . import ProviderError

    data = obj(data, "the Gemini reply")
    usage = obj(data.get("usageMetadata"), "usageMetadata", optional=True)
    cands = data.get("candidates")
    if cands is None or cands == []:
        feedback = obj(data.get("promptFeedback"), "promptFeedback", optional=True)
        reason = opt_str(feedback.get("blockReason"), "promptFeedback.blockReason")
        if reason:
            raise ProviderError(f"the prompt was blocked by the provider (blockReason {reason})", kind="refused")
        raise malformed("no candidates[0]: candidates must be a non-empty array")
    if not isinstance(cands, list):
        raise malformed(f"candidates must be an array, got {describe(cands)}")
    cand = obj(cands[0], "candidates[0]")
    content = obj(cand.get("content"), "candidates[0].content", optional=True)
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    _parts(content.get("parts"), "candidates[0].content.parts", texts, thoughts, calls)
    finish = opt_str(cand.get("finishReason"), "candidates[0].finishReason")
    if finish == "MALFORMED_FUNCTION_CALL":
        raise malformed("the model wrote a function call the API could not parse (finishReason "
                        "MALFORMED_FUNCTION_CALL)")
    reason = "tool_calls" if calls else (_FINISH.get(finish, finish.lower()) if finish else None)
    return Reply(content=clean_text("".join(texts)) or None, tool_calls=calls, finish_reason=reason,
                 prompt_tokens=tokens(usage.get("promptTokenCount"), "usageMetadata.promptTokenCount"),
                 completion_tokens=tokens(usage.get("candidatesTokenCount"), "usageMetadata.candidatesTokenCount")
                 + tokens(usage.get("thoughtsTokenCount"), "usageMetadata.thoughtsTokenCount"),
                 reasoning=clean_text("".join(thoughts)) or None, model=opt_str(data.get("modelVersion"), "modelVersion"))


class StreamState:
    """Rebuilds a GenerateContentResponse from the chunks of ``streamGenerateContent?alt=sse``:
    the first candidate's parts are appended in order (adjacent text parts of the same kind
    merged, a chunk's thoughtSignature kept on its part), the last finishReason,
    usageMetadata (cumulative) and modelVersion win. :func:`parse_response` then checks the
    rebuilt reply like any other."""

    def __init__(self) -> None:
        self.n = 0
        self.parts: list[dict[str, Any]] = []
        self.finish: Any = None
        self.usage: Any = None
        self.model: Any = None
        self.feedback: Any = None

    def feed(self, event: dict[str, Any]) -> str | None:
        """Take one chunk; return the answer text it adds (None if none). Raises ProviderError:
        kind ``http_error`` (retryable) for an ``error`` chunk, ``malformed`` for a chunk of the
        wrong shape."""
        self.n += 1
        stream_error(event)
        added: list[str] = []
        try:
            if event.get("usageMetadata") is not None:
                self.usage = event["usageMetadata"]
            if event.get("modelVersion") is not None:
                self.model = event["modelVersion"]
            if event.get("promptFeedback") is not None:
                self.feedback = event["promptFeedback"]
            for cand in event.get("candidates") or []:
                if cand.get("index", 0) != 0:
                    continue
                if cand.get("finishReason") is not None:
                    self.finish = cand["finishReason"]
                for part in (cand.get("content") or {}).get("parts") or []:
                    part = dict(part)
                    last = self.parts[-1] if self.parts else None
                    if part.get("text") == "" and not part.get("thoughtSignature"):
                        continue   # the empty part that carries a last chunk's finishReason
                    if isinstance(part.get("text"), str):
                        if part.get("thought") is not True:
                            added.append(part["text"])
                        if (last is not None and isinstance(last.get("text"), str)
                                and last.get("thought") == part.get("thought")):
                            last["text"] += part["text"]
                            if part.get("thoughtSignature"):
                                last["thoughtSignature"] = part["thoughtSignature"]
                            continue
                    self.parts.append(part)
        except (AttributeError, TypeError, ValueError) as e:
            raise malformed(f"stream chunk {self.n} has the wrong shape ({type(e).__name__}: {e})") from None
        return "".join(added) or None

    def result(self) -> dict[str, Any]:
        """The GenerateContentResponse the chunks add up to."""
        out: dict[str, Any] = {"candidates": [{"index": 0, "content": {"role": "model", "parts": self.parts},
                                               "finishReason": self.finish}] if self.parts or self.finish else [],
                               "usageMetadata": self.usage, "modelVersion": self.model}
        if self.feedback is not None:
            out["promptFeedback"] = self.feedback
        return out
