"""The grounding policy (agent config ``require_tool``; docs/evals.md#grounded-answers): whether
a final answer is sent back to the model once before it is accepted. Pure functions, no database.

* ``never`` (default): every answer is accepted.
* ``always``: an answer given before any tool returned a result in the turn is sent back once
  ("look it up first"); in json_schema tool mode the reply schema also offers no answer until a
  tool has returned a result (:func:`answer_allowed`).
* ``auto`` and ``always``: an answer given right after a tool call failed (an SQL error, a
  timeout) is sent back with the error, to fix the call rather than report the failure; one
  given right after a result with no rows (``{"rows": []}``), or with one row of NULLs and zeros
  that the tool added notes to, is sent back with its notes.
* ``auto`` and ``always``: an unreadable answer (:func:`unreadable`: no words and no value, or a
  code expression) is sent back once.
* ``auto``: an answer that states numbers which appear nowhere in what the model was given (the
  user message, the system prompt and the tools' own descriptions, earlier turns; not the
  introspected schema notes) nor in a tool result of the turn is sent back once to be checked
  with a tool; the feedback names the numbers the last tool result shows (:func:`result_values`).

With agent config ``self_check`` the first answer given after a successful tool result is also
sent back once with :data:`SELF_CHECK` (a bounded self-check before the final answer).

The loop records each send-back as a ``guardrail`` step (guard ``grounding``: the reason, the
numbers in question and the feedback the model was shown) and allows ``grounding_retries`` of
them per turn (default 2); the answer after that is accepted as it is. In json_schema tool mode
the reply after a send-back must be a tool call (the reply schema offers no answer).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .evals import numbers

POLICIES = ("never", "auto", "always")

#: agent config self_check: what the model is asked once before its answer is accepted
SELF_CHECK = ("Check your answer before it is final: does it answer exactly the question asked, with the value the "
              "tool returned (rounded as asked, in the unit asked)? If it is right, give the same answer again; if not, "
              "correct it (you may run another query).")
DEFAULT_RETRIES = 2

NO_TOOL = ("You answered without looking anything up. Use a tool to get the facts first, then answer from its "
           "result. If the question needs no data at all, give the same answer again.")


UNREADABLE = ("Your answer is not an answer a person can read (no words and no value, or a code expression). If "
              "the question needs data, call a tool and answer from its result, in words or with the value.")
_WORD = re.compile(r"[^\W\d_]{2,}")
_CODE = re.compile(r"[\[\]{}()=;<>]")


def unreadable(answer: str) -> bool:
    """An answer that is neither words nor a value: empty, punctuation only (``]``, ``.0``), or
    one token of code (``orders[2009]['total']``: no space and brackets, braces, parentheses,
    ``=`` or ``;``). Such answers are sent back under auto and always (reason ``unreadable``)."""
    text = (answer or "").strip()
    if not _WORD.search(text) and not numbers(text):
        return True
    return not any(c.isspace() for c in text) and bool(_CODE.search(text))


def empty_notes(result: Any) -> list[str] | None:
    """The notes of a tool result (``{"rows": [...], "notes": [...]}``, as the sql tool returns)
    that matched nothing: no rows, or one row of NULLs and zeros (aggregates over nothing) that
    the tool has notes about. None for any other result. For :func:`check`'s ``last_empty``."""
    rows = result.get("rows") if isinstance(result, dict) else None
    notes = [str(n) for n in result.get("notes") or []] if isinstance(result, dict) else []
    if rows == []:
        return notes
    one_empty_row = isinstance(rows, list) and len(rows) == 1 and isinstance(rows[0], dict) \
        and all(v is None or v == 0 for v in rows[0].values())
    return notes if one_empty_row and notes else None


def unsupported(answer: str, known: list[str]) -> list[str]:
    """The numbers written in ``answer`` (as written, e.g. "5.84") that no text of ``known``
    contains up to the answer's rounding (5.84 is supported by 5.8433; 25% by 0.25)."""
    pool = [n[0] for text in known for n in numbers(text)]
    out = []
    for value, dec, pct in numbers(answer):
        tol = 0.5 * 10 ** -dec + 1e-9 * max(1.0, abs(value))
        if not any(abs(p - value) <= tol or (pct and abs(p * 100 - value) <= tol) for p in pool):
            out.append(f"{value:.{dec}f}" + ("%" if pct else ""))
    return out


def check(policy: str, answer: str, *, has_tools: bool, tool_results: list[str], context: list[str],
          last_error: str | None = None, last_empty: list[str] | None = None) -> dict[str, Any] | None:
    """None to accept ``answer``, else ``{"reason", "numbers", "feedback"}`` to send it back.
    ``tool_results``: the texts of this turn's successful tool results; ``context``: the other
    texts the model was given (user message, system prompt with the tool descriptions, earlier
    turns' messages); ``last_error``: the error of the turn's last tool result when it failed
    (an answer right after a failed call is sent back under auto and always); ``last_empty``:
    the notes of the turn's last tool result when it returned no rows, or one row of NULLs and
    zeros with notes (such an answer is sent back too, reason empty_result). Raises ValueError for an unknown policy."""
    if policy not in POLICIES:
        raise ValueError(f"require_tool must be one of {', '.join(POLICIES)}, not {policy!r}")
    if policy == "never" or not has_tools:
        return None
    if last_error is not None:
        return {"reason": "tool_error", "numbers": [],
                "feedback": (f"Your last tool call failed: {last_error[:800]} Fix the call (check the table and "
                             "column names and types) and run it again, then answer from its result.")}
    if last_empty is not None:
        return {"reason": "empty_result", "numbers": [],
                "feedback": ("Your last query returned no rows. " + " ".join(n[:300] for n in last_empty[:4])
                             + " Check its conditions against the data and run it again; if there is really no "
                             "such data, say so.")}
    if unreadable(answer):
        return {"reason": "unreadable", "numbers": [], "feedback": UNREADABLE}
    if policy == "always" and not tool_results:
        return {"reason": "no_tool", "numbers": [], "feedback": NO_TOOL}
    nums = unsupported(answer, tool_results + context)
    if nums:
        shown = ", ".join(nums[:8])
        last = result_values(tool_results[-1]) if tool_results else []
        seen = (f" The last tool result shows {', '.join(last)}: write a value as it is written there."
                if last else "")
        return {"reason": "unsupported_numbers", "numbers": nums[:20],
                "feedback": (f"Your answer states {shown}, which no tool result shows.{seen} If these are facts "
                             "from the data, get them with a tool (compute them in SQL rather than by hand) and "
                             "answer from the result. If they need no data, give the same answer again.")}
    return None


def result_values(result_text: str, limit: int = 8) -> list[str]:
    """The first ``limit`` numbers of a tool result's rows, as written in its JSON (for a result
    ``{"rows": [...]}``; else of the whole text), so that the feedback on an answer whose numbers
    no result shows names the ones the result does (a small model copied 57509 as "575,090")."""
    try:
        obj = json.loads(result_text)
    except ValueError:
        obj = None
    text = json.dumps(obj["rows"]) if isinstance(obj, dict) and isinstance(obj.get("rows"), list) else result_text
    return [m.group(0) for m in _JSON_NUMBER.finditer(text)][:limit]


_JSON_NUMBER = re.compile(r"(?<![\w.\-])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.\-])")


def answer_allowed(policy: str, tool_results: list[str], sent_back: bool = False) -> bool:
    """In json_schema tool mode: whether the next reply may be a final answer. Not right after
    the policy sent an answer back (``sent_back``: the model must call a tool; a small model
    told to look something up tends to repeat its answer instead), nor under ``always`` until a
    tool has returned a result in the turn."""
    if sent_back:
        return False
    return policy != "always" or bool(tool_results)
