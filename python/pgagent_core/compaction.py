"""Context compaction (docs/memory.md#context-compaction): keep a conversation's prompt within its
model's context window.

When the estimated prompt of the next LLM call is over ``compact_at`` (default 0.85) of the
model's ``context_window`` (tokens), the loop

1. replaces the outputs of the turn's older tool calls with a stub (all but the latest
   ``KEEP_TOOL_OUTPUTS``), then, if still over,
2. summarises the conversation's older turns (all but the newest ``compact_keep_turns``,
   default 2) with the model into a summary, which stands in for them in every later prompt of
   the conversation.

Each stage is a ``compaction`` step with the estimated tokens before and after; nothing is
deleted from the log. The 85 % default follows AgentPG (the seed this was specified from).

Token estimate: the characters of the request's messages and tools as JSON, times a tokens per
character ratio taken from the provider's own usage report of the conversation's latest LLM
call (``prompt_tokens`` / ``prompt_chars`` of an llm_call step), else 1/4 (OpenAI's rule of
thumb of about 4 characters of English text per token, "What are tokens and how to count
them?", help.openai.com). No tokenizer library: tiktoken fits OpenAI's models only and fetches its
encodings from the network at first use, which this server cannot do; the calibrated ratio
tracks whatever model the conversation actually uses.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

CHARS_PER_TOKEN = 4.0       # OpenAI's rule of thumb (module docstring)
DEFAULT_AT = 0.85           # of the context window (AgentPG)
DEFAULT_KEEP_TURNS = 2      # newest completed turns never summarised
KEEP_TOOL_OUTPUTS = 1       # newest tool outputs of the turn never stubbed
SUMMARY_MAX_CHARS = 4000    # of one turn's text in the transcript sent for summarising

SUMMARY_PROMPT = (
    "You compress a conversation between a user and an assistant so that the assistant can go on "
    "without the full text. Write a concise summary of the conversation below: the facts the user "
    "gave, what was asked and answered, decisions, and anything still open. Keep names, numbers and "
    "identifiers exactly. Write plain text, at most about 300 words.")


def request_chars(messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> int:
    """Characters of the messages and tools as compact JSON (what the estimate counts)."""
    return len(json.dumps([list(messages), list(tools)], ensure_ascii=False, separators=(",", ":")))


def tokens_per_char(calibration: tuple[int, int] | None) -> float:
    """The ratio from a provider report ``(prompt_tokens, prompt_chars)``, else 1/CHARS_PER_TOKEN."""
    if calibration and calibration[0] > 0 and calibration[1] > 0:
        return calibration[0] / calibration[1]
    return 1.0 / CHARS_PER_TOKEN


def estimate(messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]], ratio: float) -> int:
    """Estimated prompt tokens of a request."""
    return int(request_chars(messages, tools) * ratio) + 1


def stub(tool_name: str | None, chars: int) -> str:
    """What the model sees instead of a dropped tool output."""
    return (f"[the output of {tool_name or 'this tool'} ({chars} characters) was removed to fit the context window; "
            "call the tool again if you need it]")


def transcript(summary: str | None, turns: Sequence[dict[str, Any]]) -> str:
    """The text sent for summarising: the earlier summary, then each turn (or injected message)."""
    parts = [f"Summary so far:\n{summary}"] if summary else []
    for h in turns:
        if h.get("role") is not None:
            parts.append(f"[{h['role']} message] {str(h.get('content') or '')[:SUMMARY_MAX_CHARS]}")
        else:
            parts.append(f"User: {str(h.get('user_message') or '')[:SUMMARY_MAX_CHARS]}\n"
                         f"Assistant: {str(h.get('answer') or '')[:SUMMARY_MAX_CHARS]}")
    return "\n\n".join(parts)


def split_history(history: Sequence[dict[str, Any]], keep_turns: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(older rows to summarise, newer rows to keep): the newest ``keep_turns`` turns, and the
    injected messages after the first of them, are kept."""
    turn_idx = [i for i, h in enumerate(history) if h.get("role") is None]
    if len(turn_idx) <= keep_turns:
        return [], list(history)
    cut = turn_idx[len(turn_idx) - keep_turns] if keep_turns > 0 else len(history)
    return list(history[:cut]), list(history[cut:])
