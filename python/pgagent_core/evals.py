"""Scoring eval cases (docs/evals.md): pure functions, no database.

A case has a reference answer (``expected``: one value, or several when its reference query
returned several rows) and a scoring rule:

* ``exact``: the answer, normalised (case-folded, whitespace collapsed, surrounding quotes and
  final punctuation removed), equals the expected value;
* ``contains``: every expected value occurs in the answer as whole words (case-insensitive);
* ``numeric``: every expected value occurs among the numbers of the answer (``1,234.5``,
  ``-3``, ``25%`` are read as 1234.5, -3 and 25), within ``tolerance`` (absolute) if given,
  else within half a unit of the ``decimals``-th decimal place of the expected value rounded to
  ``decimals`` (so ``decimals => 1`` accepts 5.8 and 5.84 for 5.843, not 5.9), else within a
  relative 1e-6;
* ``llm``: a judge model grades the answer against the rubric (:func:`judge_request`,
  :func:`parse_judge`).

Grounding (:func:`grounded`): whether the answer came from what the tools returned in its
turn. A numeric answer is grounded when each number that made it right (or, for a wrong answer,
each number it states that the question does not) is a number of a successful tool result, up
to the rounding the answer shows (5.84 is grounded by 5.8433; 25% by 0.25); a text answer when
each expected value it contains occurs in a tool result; an ``llm``-scored answer when the turn
had a successful tool result. Cases that need no tool are not graded for grounding (None).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

RULES = ("exact", "numeric", "contains", "llm")

_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][-+]?\d+(?![A-Za-z]))?(\s*%)?")
_EDGE = " \t\r\n\"'`*_.,;:!?()[]"


def normalize(text: str | None) -> str:
    """``text`` case-folded, whitespace collapsed, surrounding quotes, emphasis and final
    punctuation removed ("The answer is Iris.  " -> "the answer is iris")."""
    t = re.sub(r"\s+", " ", (text or "").casefold()).strip(_EDGE)
    return t


def numbers(text: str | None) -> list[tuple[float, int, bool]]:
    """The numbers written in ``text`` as (value, decimals written, followed by %), in order.
    Thousands separators are read (``1,234`` is 1234); a minus sign counts only when it does not
    follow a word character (``2012-01-05`` is 2012, 1, 5)."""
    out = []
    for m in _NUMBER.finditer(text or ""):
        raw = m.group(0).rstrip("% \t")
        core = raw.replace(",", "")
        try:
            v = float(core)
        except ValueError:
            continue
        if not math.isfinite(v):
            continue
        frac = core.split("e")[0].split("E")[0]
        dec = len(frac.split(".")[1]) if "." in frac else 0
        out.append((v, dec, m.group(1) is not None))
    return out


def expected_values(expected: Any) -> list[str]:
    """The reference answer as a list of texts: a JSON array (a reference query's rows) or one value."""
    if isinstance(expected, list):
        return [v if isinstance(v, str) else json.dumps(v) for v in expected if v is not None]
    if expected is None:
        return []
    if isinstance(expected, str):
        s = expected.strip()
        if s.startswith("["):
            try:
                arr = json.loads(s)
            except ValueError:
                arr = None
            if isinstance(arr, list):
                return expected_values(arr)
        return [expected]
    return [json.dumps(expected)]


def _num_tol(expected: float, tolerance: float | None, decimals: int | None) -> tuple[float, float]:
    """(target, tolerance) for a numeric comparison (see the module doc)."""
    if tolerance is not None:
        return expected, float(tolerance)
    if decimals is not None:
        return round(expected, decimals), 0.5 * 10 ** -decimals + 1e-9
    return expected, 1e-6 * max(1.0, abs(expected))


def _word_in(needle: str, hay: str) -> bool:
    n = normalize(needle)
    return bool(n) and re.search(r"(?<!\w)" + re.escape(n) + r"(?!\w)", normalize(hay)) is not None


def score(rule: str, answer: str | None, expected: Any, *, tolerance: float | None = None,
          decimals: int | None = None) -> tuple[bool, dict[str, Any]]:
    """(correct, detail) of ``answer`` against ``expected`` under ``rule`` (exact, numeric,
    contains; ``llm`` is scored by :func:`parse_judge`). ``detail`` says what matched or was
    missing: ``{"matched": [...], "missing": [...]}``. Raises ValueError for an unknown rule or
    (numeric) an expected value that is not a number."""
    values = expected_values(expected)
    if rule == "exact":
        ok = len(values) == 1 and normalize(answer) == normalize(values[0])
        return ok, {"matched": values if ok else [], "missing": [] if ok else values}
    if rule == "contains":
        matched = [v for v in values if _word_in(v, answer or "")]
        return bool(values) and len(matched) == len(values), {
            "matched": matched, "missing": [v for v in values if v not in matched]}
    if rule == "numeric":
        nums = numbers(answer)
        matched, missing, used = [], [], []
        for v in values:
            try:
                e = float(v)
            except ValueError:
                raise ValueError(f"expected value {v!r} is not a number (scoring numeric)") from None
            target, tol = _num_tol(e, tolerance, decimals)
            hit = next((n for n in nums if abs(n[0] - target) <= tol), None)
            (matched if hit else missing).append(v)
            if hit:
                used.append(hit[0])
        return bool(values) and not missing, {"matched": matched, "missing": missing, "numbers": used}
    raise ValueError(f"unknown scoring rule {rule!r} (one of {', '.join(RULES)})")


def _grounds(value: float, dec: int, pct: bool, evidence: list[tuple[float, int, bool]]) -> bool:
    tol = max(0.5 * 10 ** -dec, 1e-9 * max(1.0, abs(value))) + 1e-9
    for e, _, _ in evidence:
        if abs(e - value) <= tol or (pct and abs(e * 100 - value) <= tol):
            return True
    return False


def grounded(rule: str, answer: str | None, correct: bool, detail: dict[str, Any], evidence: list[str],
             question: str = "", needs_tool: bool = True) -> bool | None:
    """Whether ``answer`` came from ``evidence`` (the texts of its turn's successful tool
    results); None when the case needs no tool. See the module doc for the rule."""
    if not needs_tool:
        return None
    if not evidence:
        return False
    if rule == "llm":
        return True
    hay = "\n".join(evidence)
    if rule == "numeric":
        ev = numbers(hay)
        written = numbers(answer)
        if correct:
            chosen = [n for n in written if n[0] in set(detail.get("numbers") or [])]
        else:
            asked = {n[0] for n in numbers(question)}
            chosen = [n for n in written if n[0] not in asked]
        return bool(chosen) and all(_grounds(v, d, p, ev) for v, d, p in chosen)
    values = detail.get("matched") or []
    if not correct or not values:
        return False
    return all(_word_in(v, hay) or normalize(v) in normalize(hay) for v in values)


JUDGE_SYSTEM = ("You grade answers to questions. Compare the answer with the reference answer and the rubric; "
                "ignore wording, judge only whether the answer is right; when there is no reference answer the "
                "rubric decides. Reply with one JSON object, the reason first, then the verdict: "
                '{"reason": "<one sentence>", "correct": true or false}.')

# "reason" before "correct": a model that writes its reason first decides after it, not before
# (the grader prompts of G-Eval, Liu et al. 2023, and of OpenAI's evals ask for the reasoning first)
JUDGE_SCHEMA = {"type": "json_schema", "json_schema": {"name": "grade", "strict": True, "schema": {
    "type": "object", "properties": {"reason": {"type": "string"}, "correct": {"type": "boolean"}},
    "required": ["reason", "correct"], "additionalProperties": False}}}


def judge_request(question: str, answer: str | None, expected: Any, rubric: str | None) -> dict[str, Any]:
    """The chat request (``{messages, tools, params, response_format}``) that asks a judge model
    to grade ``answer``; temperature 0."""
    ref = "; ".join(expected_values(expected)) or "(none: use the rubric)"
    user = (f"Question: {question}\nReference answer: {ref}\n"
            + (f"Rubric: {rubric}\n" if rubric else "")
            + f"Answer to grade: {answer or '(no answer)'}")
    return {"messages": [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}],
            "tools": [], "params": {"temperature": 0}, "response_format": JUDGE_SCHEMA}


def parse_judge(content: str | None) -> tuple[bool | None, str]:
    """(correct, reason) from a judge's reply; (None, why) when it is not the expected JSON."""
    text = (content or "").strip()
    m = re.search(r"\{.*\}", text, re.S)
    try:
        obj = json.loads(m.group(0)) if m else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("correct"), bool):
        return None, f"the judge's reply is not {{\"correct\": bool, ...}}: {text[:200]!r}"
    return obj["correct"], str(obj.get("reason") or "")[:1000]
