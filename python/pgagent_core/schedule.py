"""Cron expressions for pgagent.schedule (issue 9): the next due time of a schedule.

Parsing and iteration are croniter's (https://github.com/kiorky/croniter; Debian's
python3-croniter, which PL/Python imports): standard 5-field expressions (minute hour
day-of-month month day-of-week, with ``*``, lists, ranges, steps and names) and the macros
``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``. A schedule's expression is
evaluated in its IANA time zone (``zoneinfo``), so ``0 9 * * 1-5`` in Europe/Paris fires at
09:00 Paris time across daylight-saving changes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidArgument

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(f"unknown time zone {tz!r}", hint="Use an IANA name such as 'UTC' or 'Europe/Paris'.") \
            from None


def next_fire(cron: str, tz: str, after: datetime) -> datetime:
    """The first due time of ``cron`` (5 fields or a macro) in time zone ``tz`` strictly after
    ``after`` (an aware datetime), as an aware UTC datetime. Raises InvalidArgument (22023)
    for an expression croniter refuses (also 6-field ones with seconds) or an unknown zone."""
    from croniter import croniter  # imported here: only schedules need it

    expr = MACROS.get(cron.strip().lower(), cron.strip()) if isinstance(cron, str) else ""
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise InvalidArgument(f"invalid cron expression {cron!r}",
                              detail="Five fields: minute hour day-of-month month day-of-week, or a macro "
                                     "(@hourly, @daily, @weekly, @monthly, @yearly).",
                              hint="e.g. '*/5 * * * *' (every 5 minutes) or '0 9 * * 1-5' (09:00 on weekdays).")
    zone = _zone(tz)
    if after.tzinfo is None:
        after = after.replace(tzinfo=timezone.utc)
    # Iterate over local wall-clock time (naive), then attach the zone: croniter's own handling
    # of aware datetimes keeps the starting UTC offset across a daylight-saving change (09:00
    # Paris became 08:00 after the March change in croniter 1.3.5). A wall time skipped by the
    # change (02:30 in March) maps to the instant an hour later; in the repeated hour (October)
    # the first occurrence fires; a result not after ``after`` is skipped.
    it = croniter(expr, after.astimezone(zone).replace(tzinfo=None))
    for _ in range(1000):
        nxt = it.get_next(datetime).replace(tzinfo=zone).astimezone(timezone.utc)
        if nxt > after:
            return nxt
    raise InvalidArgument(f"cron expression {cron!r} has no due time after {after.isoformat()}")
