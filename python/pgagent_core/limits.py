"""Input limits shared by the API, the loop and the providers.

Everything here is pure Python (no database) and raises ``ValueError`` with a message written
for the person or model that sent the input:

* :func:`check_depth` / :func:`parse_json`: JSON nested deeper than :data:`MAX_DEPTH` levels is
  refused, iteratively (a 10,000-deep value never reaches Python's recursion limit);
* :func:`clean_text` / :func:`clean_json`: text made storable in PostgreSQL ``text``/``jsonb``
  (NUL characters removed, lone UTF-16 surrogates replaced by U+FFFD);
* :func:`check_number`: finite numbers in a range (prices in USD per 1M tokens, timeouts in
  ms, counts), never NaN, Infinity or booleans;
* :data:`MAX_TOKENS_PER_CALL`: the largest token count one LLM call may report.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

#: Deepest JSON nesting accepted from callers and models (a dict or list is one level).
MAX_DEPTH = 32
#: Largest prompt or completion token count (tokens) one provider reply may report; a reply
#: claiming more (or a negative or non-integer count) is malformed.
MAX_TOKENS_PER_CALL = 10_000_000

_CONTAINERS = (dict, list, tuple)
_SCALARS = frozenset((str, int, float, bool, type(None)))


def _walk(value: Any, max_depth: int, what: str, finite: bool) -> None:
    """check_depth, and with ``finite`` also refuse float NaN/±Infinity anywhere."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    if finite and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} is not valid JSON: a number is out of range")
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else None
        if children is None:
            continue
        if depth > max_depth:
            raise ValueError(f"{what} is nested deeper than {max_depth} levels")
        kinds = set(map(type, children))
        if finite and float in kinds:
            floats = children if kinds == {float} else [c for c in children if type(c) is float]
            if not all(map(math.isfinite, floats)):
                raise ValueError(f"{what} is not valid JSON: a number is out of range")
        if _SCALARS.issuperset(kinds):  # fast path: e.g. a vector of floats
            continue
        stack.extend((c, depth + 1) for c in children if isinstance(c, _CONTAINERS))


def check_depth(value: Any, max_depth: int = MAX_DEPTH, what: str = "value") -> None:
    """Raise ValueError(``"<what> is nested deeper than <max_depth> levels"``) when ``value``
    (JSON-like: dicts, lists, tuples, scalars) nests containers deeper than ``max_depth``.

    A scalar has depth 0, ``{}`` or ``[]`` depth 1, ``{"a": [1]}`` depth 2. Walks iteratively,
    so any depth is safe to check; returns None when the value is within the limit.
    """
    _walk(value, max_depth, what, False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(text: str | bytes | bytearray, max_depth: int = MAX_DEPTH, what: str = "value", *,
               allow_nan: bool = False) -> Any:
    """``json.loads(text)`` that is safe on hostile input; returns the decoded value.

    Raises ``json.JSONDecodeError`` (a ValueError) for text that is not JSON, and ValueError
    ``"<what> is nested deeper than <max_depth> levels"`` for nesting beyond ``max_depth``
    (including text so deep that the decoder itself would raise RecursionError), and, unless
    ``allow_nan``, ValueError for the non-standard constants NaN, Infinity and -Infinity and
    for numbers too large for a float (``1e999``, which Python would read as Infinity).
    ``bytes`` are decoded as UTF-8/16/32 (by BOM), as ``json.loads`` does.
    """
    try:
        value = json.loads(text) if allow_nan else json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"{what} is nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # the constant hook, or undecodable bytes
        raise ValueError(f"{what} is not valid JSON: {e}") from None
    _walk(value, max_depth, what, not allow_nan)
    return value


def clean_text(s: str | None) -> str | None:
    """``s`` made storable in PostgreSQL: NUL characters (``\\x00``, refused by ``text`` and,
    as ``\\u0000``, by ``jsonb``: SQLSTATE 22P05) are removed, and lone UTF-16 surrogates
    (``\\ud800``..``\\udfff`` not part of a pair, which are not valid UTF-8) are replaced by
    U+FFFD; a high+low pair left as two code units is joined into its character.

    None, and any non-string value, is returned unchanged. Never raises.
    """
    if not isinstance(s, str):
        return s
    if "\x00" in s:
        s = s.replace("\x00", "")
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_json(value: Any) -> Any:
    """A copy of the JSON-like ``value`` with :func:`clean_text` applied to every string (dict
    keys included) at any depth, tuples turned into lists and non-finite floats (NaN,
    ±Infinity, which ``jsonb`` refuses) into None. Other scalars are kept as they are.

    Iterative, so it is safe on deep values; a key that becomes equal to another after
    cleaning keeps one of the two values. Never raises (for acyclic values).
    """
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        src, parent, key = stack.pop()
        if isinstance(src, str):
            parent[key] = clean_text(src)
        elif isinstance(src, dict):
            new: dict[Any, Any] = {}
            parent[key] = new
            for k, v in src.items():
                ck = clean_text(k) if isinstance(k, str) else k
                new[ck] = None
                stack.append((v, new, ck))
        elif isinstance(src, (list, tuple)):
            items: list[Any] = [None] * len(src)
            parent[key] = items
            stack.extend((v, items, i) for i, v in enumerate(src))
        elif isinstance(src, float) and not math.isfinite(src):
            parent[key] = None
        else:
            parent[key] = src
    return root[0]


def show(value: Any, limit: int = 60) -> str:
    """``value`` as short JSON text for error messages (``"yes"``, ``5``, ``null``, ``NaN``),
    cut to about ``limit`` characters. Never raises."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    text = clean_text(text) or ""
    return text if len(text) <= limit else text[:limit] + "..."


def _fmt(n: Any) -> str:
    if isinstance(n, float) and n.is_integer():
        return str(int(n))
    return str(n)


def range_text(minimum: Any = None, maximum: Any = None) -> str:
    """`` from 1 to 100`` / `` of at least 0`` / `` of at most 5`` / ``""``: the allowed range
    as a phrase to append to "an integer" or "a number"."""
    if minimum is not None and maximum is not None:
        return f" from {_fmt(minimum)} to {_fmt(maximum)}"
    if minimum is not None:
        return f" of at least {_fmt(minimum)}"
    if maximum is not None:
        return f" of at most {_fmt(maximum)}"
    return ""


def check_number(name: str, value: Any, *, minimum: Any = None, maximum: Any = None,
                 integer: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number within [minimum, maximum].

    ``value`` may be an int, a float or a ``decimal.Decimal`` (PostgreSQL numeric); booleans,
    strings, None, NaN and ±Infinity are refused. With ``integer`` only whole numbers written
    without a fraction are accepted (int, or a Decimal without decimals), so that they fit an
    integer column. Units are the caller's (USD per 1M tokens, ms, tokens...). The message
    names the field and the range, e.g. ``timeout_ms must be an integer from 1 to 3600000,
    got 0``. Returns None.
    """
    expected = f"{name} must be {'an integer' if integer else 'a number'}{range_text(minimum, maximum)}"
    ok = isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = math.isfinite(value)
    elif ok and isinstance(value, Decimal):
        ok = value.is_finite()
    if ok and integer:
        ok = isinstance(value, int) or (isinstance(value, Decimal) and value.as_tuple().exponent >= 0)
    if ok and minimum is not None and value < minimum:
        ok = False
    if ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        raise ValueError(f"{expected}, got {show(value)}")


__all__ = ["MAX_DEPTH", "MAX_TOKENS_PER_CALL", "check_depth", "check_number", "clean_json", "clean_text",
           "parse_json", "range_text", "show"]
