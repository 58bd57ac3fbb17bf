"""Print a tenant's steps live as turns run (pgagent events, docs/events.md).

LISTENs on the tenant's channel (``pgagent.event_channel()``) and, for each step event, reads
the step's one-line summary from the ``turn_timeline`` view as the connecting role, so row level
security decides what it may see: the notification itself carries only ids and kinds.

Usage::

    .venv/bin/python examples/listen.py --dsn "dbname=app user=alice" [--tenant acme]
                                        [--conversation 12] [--until-turn 34] [--timeout 60]

Run a turn in another session (``CALL pgagent.run_turn(turn)`` shows each step as it commits;
``send_message`` shows them all when its transaction commits). Exits after ``--until-turn``'s
turn finishes, after ``--timeout`` seconds, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, TextIO

import psycopg
from psycopg import sql

FINAL = ("completed", "failed", "cancelled")


def describe(conn: psycopg.Connection, event: dict[str, Any]) -> str:
    """One line for an event; a step's summary is read through turn_timeline (as the caller)."""
    if event["type"] == "step":
        row = conn.execute("SELECT kind, coalesce(tool_name, ''), left(coalesce(summary, ''), 100) "
                           "FROM pgagent.turn_timeline WHERE step_id = %s", [event["step_id"]]).fetchone()
        kind, tool, summary = row if row else (event["kind"], "", "(not visible to you)")
        return f"turn {event['turn_id']} step {event['seq']:>2} {kind:<12} {tool:<10} {summary}"
    if event["type"] == "turn":
        return f"turn {event['turn_id']} {event['previous_status'] or 'new'} -> {event['status']}"
    return f"conversation {event['conversation_id']} operator: {event['action']}"


def listen(dsn: str, tenant: Optional[str] = None, conversation: Optional[int] = None,
           until_turn: Optional[int] = None, timeout: float = 60.0, out: TextIO = sys.stdout) -> int:
    """Print events until *until_turn* is final or *timeout* s have passed; returns how many
    events were printed."""
    printed = 0
    # one connection waits for notifications, the other reads the views (a query on the waiting
    # connection would interleave with the notification stream)
    with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(dsn, autocommit=True) as reader:
        channel = conn.execute("SELECT pgagent.event_channel(%s)", [tenant]).fetchone()[0]
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        print(f"listening on {channel}", file=out, flush=True)
        for note in conn.notifies(timeout=timeout):   # ends after timeout s
            event = json.loads(note.payload)
            if conversation is not None and event.get("conversation_id") != conversation:
                continue
            print(describe(reader, event), file=out, flush=True)
            printed += 1
            if (until_turn is not None and event["type"] == "turn" and event["turn_id"] == until_turn
                    and event["status"] in FINAL):
                break
    return printed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True, help="libpq connection string")
    ap.add_argument("--tenant", help="tenant name or id (default: the current tenant)")
    ap.add_argument("--conversation", type=int, help="only this conversation's events")
    ap.add_argument("--until-turn", type=int, help="exit when this turn is completed, failed or cancelled")
    ap.add_argument("--timeout", type=float, default=60.0, help="exit after this many seconds")
    args = ap.parse_args()
    try:
        listen(args.dsn, args.tenant, args.conversation, args.until_turn, args.timeout)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
