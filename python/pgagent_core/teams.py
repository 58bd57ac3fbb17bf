"""Teams of agents (docs/multi-agent.md#teams): ``pgagent.create_team`` and
``pgagent.team_discuss``.

A discussion runs in the caller's transaction, as ``pgagent.send_message`` does. Every message
in it is the answer of one turn of one member, asked in a conversation of its own for the
discussion (metadata ``{"discussion_id", "team"}``), so each message's LLM calls, tool calls
and costs are ordinary steps; ``pgagent.discussion_turn`` lists the turns in the order spoken.

Modes:

* ``supervisor``: ``create_team`` gives the supervisor agent (config ``supervisor``) one agent
  tool per member (``ask_<member>``, pgagent_core.delegation); the discussion is one turn of the
  supervisor, which delegates to members as tools and answers. The outcome is its answer.
* ``round_robin``: each round, each member in order adds to the discussion; it sees the topic
  and the transcript so far. The outcome is the last message.
* ``debate``: round 1, each member answers; later rounds, each sees the others' latest answers,
  critiques them and gives an improved answer. Then the judge (config ``judge``) decides; the
  outcome is the judge's answer.
* ``consensus``: each round, each member answers and ends with a line ``VOTE: <answer>``;
  votes are compared case- and punctuation-insensitively. When the largest group of equal votes
  is at least ``quorum`` (a share of the members, default 2/3) the outcome is that vote;
  after ``max_rounds`` without one the discussion ends as ``no_consensus`` (each round's tally
  is kept in ``detail``). From round 2 on, members see the previous round's votes.

A member's turn that does not complete (it failed, or waits for an approval: a discussion does
not wait) ends the discussion as ``failed`` with the reason; the turns so far stay recorded.
"""

from __future__ import annotations

import re
from typing import Any

from . import configschema, limits, loop, pl
from .db import Db, one
from .errors import NotFound
from .registry import Caller, api, audit, check, obj, valid
from .registry import name as valid_name

MODES = ("supervisor", "round_robin", "debate", "consensus")
DEFAULT_ROUNDS = 3
DEFAULT_QUORUM = 2 / 3
#: characters of a message quoted to other members
QUOTE_CHARS = 2000
ASK_SCHEMA = {"type": "object", "properties": {"message": {"type": "string", "description": "the whole task"}},
              "required": ["message"]}
_VOTE = re.compile(r"^\s*\**\s*vote\s*\**\s*:\s*(.+?)\s*$", re.I | re.M)


def vote_of(text: str | None) -> str | None:
    """The vote a consensus message states: the text after the last ``VOTE:`` line (case-
    insensitive; Markdown bold allowed), or None."""
    found = _VOTE.findall(text or "")
    return found[-1].strip().strip("*").strip() or None if found else None


def normalize(vote: str) -> str:
    """A vote as compared: lower case, punctuation dropped, spaces collapsed ("Paris." == "paris")."""
    return " ".join(re.sub(r"[^\w\s]", " ", vote.lower()).split())


def tally(votes: list[str | None], members: int, quorum: float) -> tuple[str | None, dict[str, int]]:
    """(the winning vote as first written, or None; count per normalized vote). A vote wins
    when its count is at least ``quorum`` * ``members`` (members who gave no vote count
    against every option)."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for v in votes:
        if v is None:
            continue
        key = normalize(v)
        if not key:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, v)
    if not counts:
        return None, counts
    best = max(counts, key=lambda k: counts[k])
    return (first[best] if counts[best] >= quorum * members - 1e-9 else None), counts


def _quote(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + " [...]"


@api("admin")
def create_team(db: Db, gd: dict, c: Caller, name: str, members: Any, mode: str = "round_robin",
                config: Any = None) -> int:
    """Create a team (or replace one by name); returns team_id. ``members``: agent names of the
    tenant (1 to 16, no repeats; at least 2 except for supervisor). ``config`` (JSON Schema
    ``team.config``): ``supervisor`` (supervisor mode: the agent that delegates; it gets an agent
    tool ``ask_<member>`` per member), ``judge`` (debate mode: the agent that decides),
    ``quorum`` (consensus: share of members, default 2/3), ``max_rounds`` (default 3),
    ``instructions`` (added to every member's message). Audited (team_created). Raises 22023,
    42704 (an unknown agent)."""
    valid_name(name, "team name")
    check(mode in MODES, f"mode {mode!r} is not valid; valid: {', '.join(MODES)}")
    check(isinstance(members, list) and all(isinstance(m, str) and m for m in members),
          "members must be an array of agent names", "e.g. ARRAY['researcher', 'critic']")
    check(1 <= len(members) <= 16, "a team has 1 to 16 members")
    check(len(set(members)) == len(members), "members lists an agent twice")
    check(mode == "supervisor" or len(members) >= 2, f"a {mode} team needs at least 2 members")
    cfg = obj(config, "config")
    valid(lambda: configschema.validate("team.config", cfg, what="team config"), "team config")
    needed = {"supervisor": "supervisor", "debate": "judge"}.get(mode)
    check(needed is None or needed in cfg, f"a {mode} team needs config.{needed} (an agent name)",
          f"e.g. config => '{{\"{needed}\": \"lead\"}}'")
    for agent in [*members, *(cfg[k] for k in ("supervisor", "judge") if k in cfg)]:
        pl._find(db, c, "agent", agent)
    check(cfg.get("supervisor") not in members, "the supervisor cannot also be a member")
    if mode == "supervisor":
        _wire_supervisor(db, gd, c, name, cfg["supervisor"], members)
    row = one(db, """INSERT INTO pgagent.team AS t (tenant_id, name, mode, members, config, created_by)
                     VALUES ($1::uuid, $2, $3, $4, $5, $6)
                     ON CONFLICT (tenant_id, name) DO UPDATE SET mode = excluded.mode, members = excluded.members,
                        config = excluded.config
                     RETURNING t.team_id""", ["text", "text", "text", "text[]", "jsonb", "name"],
              [c.tenant_id, name, mode, members, cfg, c.role])
    audit(db, "team_created", "team", row["team_id"], {"name": name, "mode": mode, "members": members, "config": cfg})
    return int(row["team_id"])


def _wire_supervisor(db: Db, gd: dict, c: Caller, team: str, supervisor: str, members: list[str]) -> None:
    """Give ``supervisor`` an agent tool ``ask_<member>`` per member (registered or replaced)."""
    names = []
    for m in members:
        tool = f"ask_{m}"[:63]
        pl.register_tool(db, gd, c, name=tool, description=f"Ask agent {m} (team {team}); it answers the message.",
                         parameters=ASK_SCHEMA, kind="agent", config={"agent": m}, requires_approval=False,
                         timeout_ms=5000)
        names.append(tool)
    current = one(db, """SELECT coalesce(pg_catalog.array_agg(t.name ORDER BY t.name), '{}') AS tools
                           FROM pgagent.agent a JOIN pgagent.agent_tool x ON x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id
                           JOIN pgagent.tool t ON t.tenant_id = x.tenant_id AND t.tool_id = x.tool_id
                          WHERE a.tenant_id = $1::uuid AND a.name = $2""", ["text", "text"], [c.tenant_id, supervisor])
    tools = sorted(set(current["tools"] or []) | set(names))
    pl.update_agent(db, gd, c, supervisor, tools=tools)


@api("admin")
def drop_team(db: Db, gd: dict, c: Caller, name: str) -> bool:
    """Drop a team and its discussions' records (the members' turns stay). Audited. 42704."""
    row = one(db, "DELETE FROM pgagent.team WHERE tenant_id = $1::uuid AND name = $2 RETURNING team_id",
              ["text", "text"], [c.tenant_id, name])
    if row is None:
        raise NotFound(f"team {name!r} does not exist (for this tenant)")
    audit(db, "team_dropped", "team", row["team_id"], {"name": name})
    return True


class _Discussion:
    """One running discussion: its row, the members' conversations and the messages so far."""

    def __init__(self, db: Db, gd: dict, c: Caller, team: dict[str, Any], topic: str, rounds: int) -> None:
        self.db, self.gd, self.c, self.team, self.topic, self.max_rounds = db, gd, c, team, topic, rounds
        self.id = int(one(db, """INSERT INTO pgagent.discussion (tenant_id, team_id, mode, topic, max_rounds, created_by)
                                 VALUES ($1::uuid, $2, $3, $4, $5, $6) RETURNING discussion_id""",
                          ["text", "int8", "text", "text", "int4", "name"],
                          [c.tenant_id, team["team_id"], team["mode"], topic, rounds, c.role])["discussion_id"])
        self.conversations: dict[str, int] = {}
        self.messages: list[dict[str, Any]] = []
        self.rounds = 0
        self.failed: str | None = None

    def ask(self, agent: str, role: str, rnd: int, content: str, vote: bool = False) -> dict[str, Any] | None:
        """One message: a turn of ``agent`` with ``content``, run to its end and recorded as the
        next discussion_turn. Returns the message, or None when the turn did not complete (the
        discussion then fails). The team's config.instructions are added to ``content``."""
        instructions = self.team["config"].get("instructions")
        if instructions:
            content = f"{content}\n\n{instructions}"
        turn_id, result = self.turn(agent, content)
        return self.record(agent, role, rnd, turn_id, result, vote)

    def turn(self, agent: str, content: str) -> tuple[int, dict[str, Any]]:
        """A turn of ``agent`` with ``content`` in its conversation of this discussion (started
        on first use), run to its end in the caller's transaction: (turn_id, loop summary)."""
        conv = self.conversations.get(agent)
        if conv is None:
            conv = self.conversations[agent] = pl.start_conversation(
                self.db, self.gd, self.c, agent, title=f"team {self.team['name']}: discussion {self.id}",
                metadata={"discussion_id": self.id, "team": self.team["name"]})
        turn_id = pl._new_turn(self.db, self.gd, self.c, conv, content, None, "running")
        return turn_id, loop.drive(self.db, self.gd, pl._locked(self.db, self.gd, self.c, turn_id))

    def record(self, agent: str, role: str, rnd: int, turn_id: int, result: dict[str, Any],
               vote: bool = False) -> dict[str, Any] | None:
        """Record turn ``turn_id`` (its loop summary ``result``) as the next message."""
        msg = {"seq": len(self.messages) + 1, "round": rnd, "role": role, "agent": agent, "turn_id": turn_id,
               "status": result["status"], "answer": result.get("answer"),
               "vote": vote_of(result.get("answer")) if vote and result["status"] == "completed" else None}
        self.db.all("""INSERT INTO pgagent.discussion_turn (tenant_id, discussion_id, seq, round, role, agent, turn_id, vote)
                       VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8)""",
                    ["text", "int8", "int4", "int4", "text", "text", "int8", "text"],
                    [self.c.tenant_id, self.id, msg["seq"], rnd, role, agent, turn_id, msg["vote"]])
        self.messages.append(msg)
        if result["status"] != "completed":
            why = result.get("error") or f"its turn is {result['status']} (a discussion does not wait for approvals)"
            self.failed = f"{role} {agent} (turn {turn_id}) did not answer: {why}"
            return None
        return msg

    def finish(self, status: str, outcome: str | None, detail: dict[str, Any]) -> dict[str, Any]:
        """Close the discussion row and return what team_discuss returns."""
        if self.failed is not None:
            status, outcome, detail = "failed", None, {**detail, "error": self.failed}
        self.db.all("""UPDATE pgagent.discussion SET status = $3, rounds = $4, outcome = $5, detail = $6,
                              finished_at = pg_catalog.clock_timestamp()
                        WHERE tenant_id = $1::uuid AND discussion_id = $2""",
                    ["text", "int8", "text", "int4", "text", "jsonb"],
                    [self.c.tenant_id, self.id, status, self.rounds, outcome, limits.clean_json(detail)])
        return {"discussion_id": self.id, "team": self.team["name"], "mode": self.team["mode"], "status": status,
                "rounds": self.rounds, "outcome": outcome, "detail": detail,
                "messages": [{k: m[k] for k in ("seq", "round", "role", "agent", "turn_id", "answer", "vote")}
                             for m in self.messages]}


@api("user")
def team_discuss(db: Db, gd: dict, c: Caller, team: str, topic: str, max_rounds: Any = None) -> dict[str, Any]:
    """Run a discussion of ``team`` on ``topic`` in the caller's transaction (see the module doc
    for each mode); returns ``{discussion_id, team, mode, status (completed | no_consensus |
    failed), rounds, outcome, detail, messages: [{seq, round, role, agent, turn_id, answer,
    vote}]}``. ``max_rounds`` (1..20) defaults to the team's config (3). Raises 22023, 42704,
    55000 (a member is disabled)."""
    check(isinstance(topic, str) and topic.strip() != "", "topic must be a non-empty text")
    row = one(db, "SELECT team_id, name, mode, members, config FROM pgagent.team WHERE tenant_id = $1::uuid AND name = $2",
              ["text", "text"], [c.tenant_id, team])
    if row is None:
        raise NotFound(f"team {team!r} does not exist (for this tenant)", hint="Create it with pgagent.create_team.")
    rounds = row["config"].get("max_rounds", DEFAULT_ROUNDS) if max_rounds is None else max_rounds
    check(isinstance(rounds, int) and not isinstance(rounds, bool) and 1 <= rounds <= 20,
          "max_rounds must be an integer from 1 to 20")
    d = _Discussion(db, gd, c, row, limits.clean_text(topic) or "", rounds)
    result = {"supervisor": _supervise, "round_robin": _round_robin, "debate": _debate,
              "consensus": _consensus}[row["mode"]](d)
    audit(db, "team_discussed", "discussion", d.id, {"team": team, "status": result["status"], "rounds": d.rounds})
    return result


def _supervise(d: _Discussion) -> dict[str, Any]:
    lead = d.team["config"]["supervisor"]
    d.rounds = 1
    turn_id, result = d.turn(lead, d.topic)
    # the members' turns are the supervisor's child turns (its agent tool calls), in call order
    kids = d.db.all("""SELECT t.turn_id, t.status, t.answer, t.error, a.name AS agent
                         FROM pgagent.turn t
                         JOIN pgagent.conversation cv ON cv.tenant_id = t.tenant_id AND cv.conversation_id = t.conversation_id
                         JOIN pgagent.agent a ON a.tenant_id = cv.tenant_id AND a.agent_id = cv.agent_id
                        WHERE t.tenant_id = $1::uuid AND t.parent_turn_id = $2 ORDER BY t.parent_step_id""",
                    ["text", "int8"], [d.c.tenant_id, turn_id])
    for k in kids:
        d.record(k["agent"], "member", 1, int(k["turn_id"]), {"status": "completed", "answer": k["answer"]})
    d.record(lead, "supervisor", 1, turn_id, result)
    return d.finish("completed", result.get("answer"), {"delegations": len(kids)})


def _round_robin(d: _Discussion) -> dict[str, Any]:
    members = d.team["members"]
    for rnd in range(1, d.max_rounds + 1):
        d.rounds = rnd
        for agent in members:
            said = "\n".join(f"{m['agent']}: {_quote(m['answer'])}" for m in d.messages) or "(nothing yet)"
            msg = d.ask(agent, "member", rnd, f"Team discussion (round {rnd} of {d.max_rounds}). Topic: {d.topic}\n\n"
                                              f"Said so far:\n{said}\n\nYou are {agent}: add your contribution.")
            if msg is None:
                return d.finish("failed", None, {})
    return d.finish("completed", d.messages[-1]["answer"], {})


def _debate(d: _Discussion) -> dict[str, Any]:
    members = d.team["members"]
    latest: dict[str, str] = {}
    for rnd in range(1, d.max_rounds + 1):
        d.rounds = rnd
        for agent in members:
            if rnd == 1:
                content = f"Debate topic: {d.topic}\nGive your answer and your reasons."
            else:
                others = "\n".join(f"- {a}: {_quote(t)}" for a, t in latest.items() if a != agent)
                content = (f"Debate topic: {d.topic}\nRound {rnd} of {d.max_rounds}. The other members answered:\n"
                           f"{others}\nCritique their answers and give your improved answer.")
            msg = d.ask(agent, "member", rnd, content)
            if msg is None:
                return d.finish("failed", None, {})
            latest[agent] = msg["answer"]
    judge = d.team["config"]["judge"]
    finals = "\n".join(f"- {a}: {_quote(t)}" for a, t in latest.items())
    verdict = d.ask(judge, "judge", d.rounds, f"Debate topic: {d.topic}\nThe members' final answers:\n{finals}\n"
                                              f"Decide which answer is best and state the final answer.")
    if verdict is None:
        return d.finish("failed", None, {})
    return d.finish("completed", verdict["answer"], {"judge": judge})


def _consensus(d: _Discussion) -> dict[str, Any]:
    members = d.team["members"]
    quorum = float(d.team["config"].get("quorum", DEFAULT_QUORUM))
    tallies = []
    previous: list[dict[str, Any]] = []
    for rnd in range(1, d.max_rounds + 1):
        d.rounds = rnd
        content = f"Question: {d.topic}\n"
        if previous:
            content += "Votes of the last round:\n" + "\n".join(
                f"- {m['agent']}: {m['vote'] or '(no vote)'}" for m in previous) + "\nReconsider if you wish.\n"
        content += "Answer briefly, and end with a line 'VOTE: <your answer in a few words>'."
        this_round = []
        for agent in members:
            msg = d.ask(agent, "member", rnd, content, vote=True)
            if msg is None:
                return d.finish("failed", None, {"tallies": tallies})
            this_round.append(msg)
        winner, counts = tally([m["vote"] for m in this_round], len(members), quorum)
        tallies.append({"round": rnd, "votes": counts})
        if winner is not None:
            return d.finish("completed", winner, {"tallies": tallies, "quorum": quorum})
        previous = this_round
    return d.finish("no_consensus", None, {"tallies": tallies, "quorum": quorum})

