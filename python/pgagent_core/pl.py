"""The SQL API's implementation: one dispatcher that every PL/pgSQL wrapper calls.

Each public SQL function is a SECURITY DEFINER PL/pgSQL wrapper (search_path pinned) that calls
``pgagent._py(name, args jsonb)``; :func:`dispatch` checks the caller, runs the function named
``name`` from :data:`API` and returns ``{"result": ...}`` or ``{"error": {message, sqlstate,
detail, hint}}``, which the wrapper raises. So:

- the loop and every write run with the extension owner's rights, and tenant roles need (and
  have) no INSERT, UPDATE or DELETE on any pgagent table;
- the caller is the role the session acts as (:func:`caller`: ``SET ROLE``'s role, else
  ``session_user``), never ``current_user`` (the owner, inside the wrapper); it must be a member
  of the pgagent group role the function needs, and its tenant comes from membership
  (``pgagent.current_tenant()``);
- an API call made while this backend is running a turn (a tool calling back into pgagent) is
  refused, so a tool cannot approve or drive its own turn;
- no Python traceback reaches the client: unexpected errors are logged with their traceback
  (server log) and reported as XX000.
"""

from __future__ import annotations

import dataclasses
import json
import re
import traceback

from typing import Any, Callable

from . import configschema, delegation, limits, loop, presets, providers, secrets, tools, validation
from .registry import API, NAME_RE, Caller, api
from .registry import audit as _audit
from .registry import check as _check
from .registry import name as _name
from .registry import obj as _obj
from .registry import valid as _valid
from .db import Db, PlpyDb, one
from .errors import (Busy, Forbidden, InUse, Internal, InvalidArgument, InvalidState, NotFound, PgAgentError)

GROUPS = ("viewer", "user", "operator", "admin")
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$")
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SECRET_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


CALLER_SQL = """
WITH o AS MATERIALIZED (SELECT pgagent._outer_user() AS role),
     u AS MATERIALIZED (SELECT o.role, coalesce(r.rolsuper, false) AS su,
                               coalesce(r.rolsuper, false) OR pg_catalog.pg_has_role(o.role, $1, 'MEMBER') AS ok
                          FROM o LEFT JOIN pg_catalog.pg_roles r ON r.rolname = o.role)
SELECT u.role::text AS role, session_user::text AS session_user, u.su, u.ok,
       CASE WHEN u.ok THEN pgagent.current_tenant()::text END AS tenant_id
  FROM u"""


def caller(db: Db, group: str) -> Caller:
    """The calling role and its tenant. Raises Forbidden (42501) unless it is a member of
    ``pgagent_<group>`` (or a superuser); current_tenant() raises 42501 for a role of no tenant."""
    row = one(db, CALLER_SQL, ["name"], [f"pgagent_{group}"])
    if not row["ok"]:
        raise Forbidden(f'role "{row["role"]}" is not a member of pgagent_{group}',
                        detail=f"This function needs the pgagent_{group} role (or a role above it).",
                        hint=f"Ask an admin to GRANT pgagent_{group} TO {row['role']}.")
    return Caller(row["role"], row["session_user"], bool(row["su"]), row["tenant_id"])


def _spi_error(e: Exception) -> dict[str, Any]:
    """An SQL error raised inside the API as ``{message, sqlstate, detail, hint}``."""
    data = getattr(e, "spidata", None) or ()
    detail = data[1] if len(data) > 1 else None
    hint = data[2] if len(data) > 2 else None
    msg = str(e.args[0]) if e.args else str(e)
    return PgAgentError(msg, detail=detail, hint=hint or "See docs/api.md.").as_dict() | {
        "sqlstate": getattr(e, "sqlstate", None) or "XX000"}


def dispatch(plpy: Any, gd: dict, name: str, args: str | None) -> str:
    """Body of ``pgagent._py``: run API function ``name`` with ``args`` (a JSON object of its
    named arguments) for the calling role. Returns JSON text ``{"result": ...}`` or
    ``{"error": {message, sqlstate, detail, hint}}``; never raises."""
    entry = API.get(name)
    if entry is None:
        return _jsonb({"error": Internal(f"unknown API function {name!r}").as_dict()})
    group, reentrant, fn = entry
    if gd.get("pgagent_active") and not reentrant:
        return _jsonb({"error": InvalidState(
            f"pgagent.{name} was called while this session is running a turn",
            detail="A tool (or a trigger fired by one) called back into the pgagent API.",
            hint="Tools may not drive, approve or configure agents; call the API from outside the turn.").as_dict()})
    outer = gd.get("pgagent_active")
    gd["pgagent_active"] = True
    try:
        db = PlpyDb(plpy, gd, atomic=True)
        c = gd.get("pgagent_run_caller") if name == "turn_step" else None
        if c is None:
            c = caller(db, group)
            if name == "turn_step" and "pgagent_run_caller" in gd:
                gd["pgagent_run_caller"] = c   # one check per CALL run_turn (see run_turn_proc)
        try:
            kwargs = limits.parse_json(args, max_depth=limits.MAX_DEPTH + 1, what="a jsonb argument",
                                       allow_nan=True) if args else {}
        except ValueError as e:
            raise InvalidArgument(str(e).replace(f"{limits.MAX_DEPTH + 1} levels", f"{limits.MAX_DEPTH} levels"),
                                  hint="Flatten the JSON value; pgagent refuses JSON nested that deep.") from None
        return _jsonb({"result": fn(db, gd, c, **kwargs)})
    except PgAgentError as e:
        return _jsonb({"error": e.as_dict()})
    except loop.Interrupted as e:
        return _jsonb({"error": PgAgentError(
            "interrupted during an LLM call", detail=str(e),
            hint="The turn keeps its committed steps: CALL pgagent.run_turn to resume it or "
                 "pgagent.cancel_turn to end it.").as_dict() | {"sqlstate": "57014"}})
    except Exception as e:  # plpy.SPIError (an SQL error inside the API) or a bug
        if getattr(e, "sqlstate", None):
            return _jsonb({"error": _spi_error(e)})
        plpy.log("pgagent: internal error in %s: %s" % (name, traceback.format_exc()))
        return _jsonb({"error": Internal(f"internal error in pgagent.{name}: {type(e).__name__}: {e}").as_dict()})
    finally:
        gd["pgagent_active"] = outer


def run_turn_proc(plpy: Any, gd: dict, turn_id: int) -> str:
    """Body of the procedure ``pgagent._run_turn``: commit, then call ``pgagent._turn_step``
    once per transaction, with ``synchronous_commit = on`` for that transaction, until the turn
    stops. Returns JSON text like :func:`dispatch`; an
    explicit transaction block (where COMMIT is not allowed) is reported as 25001."""
    try:
        plpy.commit()
    except Exception:
        return _jsonb({"error": InvalidState(
            f"CALL pgagent.run_turn({turn_id}) must run outside a transaction block",
            detail="run_turn commits after every step, which is not possible inside BEGIN ... COMMIT "
                   "or inside a function.",
            hint="CALL it in autocommit mode (psql's default; psycopg: autocommit=True), or use "
                 "pgagent.send_message / pgagent.process_tool_call inside a transaction.").as_dict()
            | {"sqlstate": "25001"}})
    # Each unit's commit is durable whatever the server's or the session's synchronous_commit:
    # SET LOCAL (it lasts one transaction) in every unit's statement; the setting is read at
    # COMMIT, after the statement. With synchronous_commit = off, a crash loses the last commits
    # that run_turn already reported (docs/durability.md).
    plan = gd.get("pgagent_step_plan")
    if plan is None:
        plan = gd["pgagent_step_plan"] = plpy.prepare(
            "SELECT pg_catalog.set_config('synchronous_commit', 'on', true) AS durable, pgagent._turn_step($1) AS r",
            ["int8"])
    # The caller cannot change between two units of one CALL (the procedure's body is ours and
    # runs no SET ROLE), so the first unit's caller check serves the whole CALL.
    gd["pgagent_run_caller"] = None
    try:
        while True:
            r = json.loads(plan.execute([turn_id])[0]["r"])
            if "error" in r or r["result"]["done"]:
                return _jsonb(r if "error" in r else {"result": r["result"]["result"]})
            plpy.commit()
    except Exception as e:  # e.g. a cancel that lands in COMMIT between two units
        for key in [k for k in gd.get("pgagent_session_locks", set()) if k[1] == turn_id]:
            gd["pgagent_session_locks"].discard(key)
            try:
                plpy.execute(plpy.prepare(f"SELECT pg_catalog.pg_advisory_unlock({loop.LOCK_KEY_SQL})",
                                          ["text", "int8"]), list(key))
            except Exception:
                pass   # the lock goes with the session at the latest
        for key in [k for k in gd.get("pgagent_turns", {}) if k[1] == turn_id]:
            gd["pgagent_turns"].pop(key, None)
        return _jsonb({"error": PgAgentError(
            f"CALL pgagent.run_turn({turn_id}) stopped between two steps: {e}",
            detail="Every step committed so far is kept.",
            hint=f"CALL pgagent.run_turn({turn_id}) again to resume it.").as_dict()
            | {"sqlstate": getattr(e, "sqlstate", None) or "57014"}})
    finally:
        gd.pop("pgagent_run_caller", None)


def llm_call(plpy: Any, gd: dict, model_id: int, request: str) -> str:
    """Body of the SECURITY DEFINER ``pgagent._llm_call`` (EXECUTE for nobody but the owner):
    one provider call for a model that has a secret_name, made here so that the decrypted key
    is held by this function only.

    Checks that the session's outer role may act for the model's tenant (42501 otherwise), takes
    the key from pgagent.secret (for superusers also the server environment or the setting
    ``pgagent.secret.<name>``; never for tenant roles, who could otherwise aim any environment
    variable at a server of their own), calls the provider and returns, as JSON text,
    ``{"reply": <Reply fields>}`` (a request with ``input`` instead of ``messages`` is an
    embeddings request: ``{"embeddings": [[...]], "prompt_tokens", "latency_ms"}``) or
    ``{"error": {message, kind, status, retryable, retry_after_s}}``, with every occurrence of
    the key replaced by [REDACTED]."""
    db = PlpyDb(plpy, gd, atomic=True)
    row = one(db, LLM_MODEL_SQL, ["int8"], [model_id])
    if row is None or not row["ok"]:
        return _jsonb({"error": {"message": f"role may not use model {model_id}", "kind": "config",
                                 "status": None, "retryable": False}})
    model, name = row["model"], row["model"]["secret_name"]
    req = json.loads(request)
    key = None
    try:
        found = one(db, LLM_KEY_SQL, ["text", "text"], [model["tenant_id"], name])
        key = found["v"] if found else None
    except Exception as e:  # no key-encryption key, or a ciphertext it cannot open
        return _jsonb({"error": {"message": f"cannot decrypt secret {name!r}: {e}",
                                 "kind": "config", "status": None, "retryable": False}})
    if key is None and row["su"]:
        try:
            key = secrets.resolve(db, name)
        except KeyError:
            key = None
    if key is None:
        return _jsonb({"error": {"message": f"secret {name!r} for model {model['name']!r} is not set "
                                            f"(pgagent.set_secret)", "kind": "config", "status": None,
                                 "retryable": False}})
    try:
        if "input" in req:  # an embeddings request (pgagent.embed)
            vectors, tokens, latency = providers.embed(loop.http_session(gd), model, req["input"],
                                                       req.get("params") or {}, key, check=loop.interrupt_check(db))
            return _jsonb({"embeddings": vectors, "prompt_tokens": tokens, "latency_ms": latency})
        reply = providers.chat(loop.http_session(gd), model, req["messages"], req.get("tools") or [],
                               req.get("params") or {}, key, req.get("response_format"),
                               check=loop.interrupt_check(db),
                               on_delta=(lambda t: db.notice(secrets.redact(t, [key])))
                               if (req.get("params") or {}).get("stream") else None)
    except providers.ProviderError as e:
        return _jsonb(secrets.redact({"error": {"message": e.message, "kind": e.kind, "status": e.status,
                                                "retryable": e.retryable, "retry_after_s": e.retry_after_s}},
                                     [key]))
    return _jsonb(secrets.redact({"reply": dataclasses.asdict(reply)}, [key]))


LLM_MODEL_SQL = """
SELECT pg_catalog.to_jsonb(m) AS model, pgagent._may_act(m.tenant_id) AS ok,
       coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = pgagent._outer_user()), false) AS su
  FROM pgagent.model m WHERE m.model_id = $1"""
LLM_KEY_SQL = """
SELECT pgagent._secret_decrypt(s.ciphertext) AS v FROM pgagent.secret s
 WHERE s.tenant_id = $1::uuid AND s.name = $2"""


def _jsonb(value: Any) -> str:
    return json.dumps(value, default=str)


# ---------------------------------------------------------------------------- argument checks

def _overlay(current: dict[str, Any], cols: tuple[str, ...] | list[str], changes: dict[str, Any]) -> dict[str, Any]:
    """The current row's ``cols`` with the non-NULL ``changes`` on top (what update_* saves)."""
    return {**{k: current[k] for k in cols}, **{k: v for k, v in changes.items() if v is not None and k in cols}}


def _num(name: str, value: Any, **kw: Any) -> Any:
    _valid(lambda: limits.check_number(name, value, **kw), name)
    return value


# ---------------------------------------------------------------------------- models

MODEL_COLS = ("name", "kind", "provider", "base_url", "model_name", "secret_name", "params", "tool_mode",
              "input_usd_per_mtok", "output_usd_per_mtok", "context_window", "timeout_ms", "max_retries",
              "is_default")
#: register_model's values for what neither the caller nor a preset gave.
MODEL_DEFAULTS = {"params": {}, "tool_mode": "native", "input_usd_per_mtok": 0, "output_usd_per_mtok": 0,
                  "timeout_ms": 60000, "max_retries": 2, "is_default": False}
MODEL_TYPES = ["text", "text", "text", "text", "text", "text", "jsonb", "text", "numeric", "numeric", "int4", "int4",
               "int4", "bool"]


def _check_model(m: dict[str, Any]) -> dict[str, Any]:
    _name(m["name"], "model name", MODEL_NAME_RE)
    _check(m["kind"] in ("chat", "embedding"), f"kind {m['kind']!r} is not a model kind; valid: chat, embedding")
    _check(m["provider"] in providers.PROVIDERS,
           f"provider {m['provider']!r} is not supported; valid: {', '.join(sorted(providers.PROVIDERS))}",
           "openai covers every OpenAI-compatible server (llama.cpp, vLLM, OpenRouter, Ollama's /v1).")
    _check(m["kind"] == "chat" or m["provider"] == "openai",
           f"provider {m['provider']} has no embeddings endpoint; embedding models use provider openai")
    _check(isinstance(m["base_url"], str) and bool(re.match(r"^https?://\S+$", m["base_url"])),
           f"base_url {m['base_url']!r} must be an http(s) URL", "e.g. https://api.openai.com/v1")
    m["model_name"] = m["model_name"] or m["name"]
    _check(isinstance(m["model_name"], str) and m["model_name"].strip() != "", "model_name must be non-empty")
    _check(m["secret_name"] is None or bool(SECRET_RE.match(str(m["secret_name"]))),
           f"secret_name {m['secret_name']!r} is not a valid secret name", f"A secret name matches {SECRET_RE.pattern}.")
    m["params"] = _obj(m["params"], "params")
    _valid(lambda: providers.check_params(m["provider"], m["params"], kind=m["kind"]), "params")
    _check(m["tool_mode"] in ("native", "json_schema"),
           f"tool_mode {m['tool_mode']!r} is not valid; valid: json_schema, native")
    for k in ("input_usd_per_mtok", "output_usd_per_mtok"):
        _num(k, m[k], minimum=0, maximum=1_000_000)
    if m["context_window"] is not None:
        _num("context_window", m["context_window"], minimum=1, maximum=100_000_000, integer=True)
    _num("timeout_ms", m["timeout_ms"], minimum=1, maximum=3_600_000, integer=True)
    _num("max_retries", m["max_retries"], minimum=0, maximum=10, integer=True)
    _check(isinstance(m["is_default"], bool), "is_default must be true or false")
    return m


def _save_model(db: Db, c: Caller, m: dict[str, Any], action: str) -> int:
    if m["is_default"]:
        db.all("UPDATE pgagent.model SET is_default = false WHERE tenant_id = $1::uuid AND kind = $2 "
               "AND is_default AND name <> $3", ["text", "text", "text"], [c.tenant_id, m["kind"], m["name"]])
    cols = ", ".join(MODEL_COLS)
    vals = ", ".join(f"${i + 2}" for i in range(len(MODEL_COLS)))
    sets = ", ".join(f"{k} = excluded.{k}" for k in MODEL_COLS[1:])
    row = one(db, f"""INSERT INTO pgagent.model AS m (tenant_id, {cols}) VALUES ($1::uuid, {vals})
                      ON CONFLICT (tenant_id, name) DO UPDATE SET {sets}, updated_at = now()
                      RETURNING m.model_id""", ["text", *MODEL_TYPES], [c.tenant_id, *[m[k] for k in MODEL_COLS]])
    _audit(db, action, "model", row["model_id"], {k: m[k] for k in ("name", "kind", "provider", "base_url",
                                                                    "model_name", "secret_name", "is_default")})
    return int(row["model_id"])


@api("admin")
def register_model(db: Db, gd: dict, c: Caller, **a: Any) -> int:
    """Create or replace (by name) a model of the caller's tenant; returns model_id. 22023 for
    bad values, naming the valid ones. ``preset`` (:mod:`pgagent_core.presets`) fills the
    provider, base URL, tool mode, secret name, prices and context window the caller left NULL;
    without one a NULL base_url is the provider's usual one. ``secret_name => ''`` means no key."""
    m = {k: a.get(k) for k in MODEL_COLS}
    m["kind"] = m["kind"] or "chat"
    if a.get("preset") is not None:
        m = _valid(lambda: presets.apply(a["preset"], m), "preset")
    if m["secret_name"] == "":
        m["secret_name"] = None
    m["provider"] = m["provider"] or "openai"
    if m["base_url"] is None and m["provider"] in presets.PRESETS:
        m["base_url"] = presets.PRESETS[m["provider"]]["base_url"]
    for k, v in MODEL_DEFAULTS.items():
        if m[k] is None:
            m[k] = v
    m = _check_model(m)
    existing = _find(db, c, "model", m["name"], missing_ok=True)
    return _save_model(db, c, m, "model_updated" if existing else "model_registered")


@api("admin")
def update_model(db: Db, gd: dict, c: Caller, name: str, **changes: Any) -> int:
    """Change the given (non-NULL) fields of a model; returns model_id. 42704, 22023."""
    m = _overlay(_find(db, c, "model", name), MODEL_COLS, changes)
    m["input_usd_per_mtok"] = float(m["input_usd_per_mtok"])
    m["output_usd_per_mtok"] = float(m["output_usd_per_mtok"])
    return _save_model(db, c, _check_model(m), "model_updated")


# ---------------------------------------------------------------------------- generic lookups and lifecycle

TABLES = {"model": ("model", "model_id"), "tool": ("tool", "tool_id"), "agent": ("agent", "agent_id"),
          "persona": ("persona", "persona_id")}


def _find(db: Db, c: Caller, kind: str, name: Any, *, missing_ok: bool = False) -> dict[str, Any] | None:
    table, _ = TABLES[kind]
    row = one(db, f"SELECT pg_catalog.to_jsonb(x) AS r FROM pgagent.{table} x WHERE x.tenant_id = $1::uuid "
                  f"AND x.name = $2", ["text", "text"], [c.tenant_id, name])
    if row is None and not missing_ok:
        raise NotFound(f"{kind} {name!r} does not exist (for this tenant)",
                       hint=f"List them with SELECT name FROM pgagent.{table};")
    return row["r"] if row else None


def _set_enabled(db: Db, c: Caller, kind: str, name: str, enabled: bool) -> bool:
    table, idcol = TABLES[kind]
    row = _find(db, c, kind, name)
    db.all(f"UPDATE pgagent.{table} SET enabled = $3, updated_at = now() WHERE tenant_id = $1::uuid AND {idcol} = $2",
           ["text", "int8", "bool"], [c.tenant_id, row[idcol], enabled])
    _audit(db, f"{kind}_{'enabled' if enabled else 'disabled'}", kind, row[idcol], {"name": name})
    return row["enabled"] != enabled


def _usage(db: Db, c: Caller, sql: str, args: list[Any]) -> list[str]:
    return [r["n"] for r in db.all(sql, ["text", "int8"], [c.tenant_id, *args])]


def _delete(db: Db, c: Caller, kind: str, name: str) -> bool:
    table, idcol = TABLES[kind]
    row = _find(db, c, kind, name)
    oid = row[idcol]
    if kind == "model":
        users = _usage(db, c, "SELECT a.name AS n FROM pgagent.agent a WHERE a.tenant_id = $1::uuid AND a.model_id = $2",
                       [oid])
    elif kind == "persona":
        users = _usage(db, c, "SELECT a.name AS n FROM pgagent.agent a WHERE a.tenant_id = $1::uuid "
                              "AND a.persona_id = $2", [oid])
    elif kind == "agent":
        users = _usage(db, c, "SELECT 'conversation ' || x.conversation_id AS n FROM pgagent.conversation x "
                              "WHERE x.tenant_id = $1::uuid AND x.agent_id = $2 LIMIT 5", [oid])
    else:  # tool: used once any turn called it
        users = _usage(db, c, "SELECT 'turn ' || s.turn_id AS n FROM pgagent.step s JOIN pgagent.tool t "
                              "ON t.tenant_id = s.tenant_id AND t.name = s.tool_name WHERE s.tenant_id = $1::uuid "
                              "AND t.tool_id = $2 AND s.kind = 'tool_call' LIMIT 5", [oid])
    if users:
        raise InUse(f"{kind} {name!r} is in use and cannot be deleted",
                    detail=f"Used by: {', '.join(users)}.",
                    hint=(f"pgagent.disable_{kind}('{name}') keeps the history readable."
                          if kind != "persona" else "Change those agents' persona first (pgagent.update_agent)."))
    db.all(f"DELETE FROM pgagent.{table} WHERE tenant_id = $1::uuid AND {idcol} = $2", ["text", "int8"],
           [c.tenant_id, oid])
    _audit(db, f"{kind}_deleted", kind, oid, {"name": name})
    return True


def _lifecycle(kind: str) -> None:
    def disable(db: Db, gd: dict, c: Caller, name: str) -> bool:
        return _set_enabled(db, c, kind, name, False)

    def enable(db: Db, gd: dict, c: Caller, name: str) -> bool:
        return _set_enabled(db, c, kind, name, True)

    def delete(db: Db, gd: dict, c: Caller, name: str) -> bool:
        return _delete(db, c, kind, name)

    for verb, fn in (("disable", disable), ("enable", enable), ("delete", delete)):
        if verb != "delete" and kind == "persona":
            continue
        fn.__name__ = f"{verb}_{kind}"
        fn.__doc__ = f"{verb.capitalize()} the caller's tenant's {kind} by name (audited). 42704, 2BP01 (in use)."
        api("admin")(fn)


for _k in TABLES:
    _lifecycle(_k)


# ---------------------------------------------------------------------------- personas

def _check_persona(p: dict[str, Any]) -> dict[str, Any]:
    _name(p["name"], "persona name")
    _check(isinstance(p["system_prompt"], str) and p["system_prompt"].strip() != "",
           "system_prompt must be a non-empty text")
    p["traits"] = _obj(p["traits"], "traits")
    _valid(lambda: configschema.validate("persona.traits", p["traits"], what="traits"), "traits")
    p["params"] = _obj(p["params"], "params")
    _valid(lambda: _check_params_any(p["params"]), "params")
    return p


def _check_params_any(params: dict[str, Any]) -> None:
    """Persona params apply to whichever model an agent uses: valid for at least one provider."""
    errors = []
    for provider in providers.PROVIDERS:
        try:
            providers.check_params(provider, params)
            return
        except ValueError as e:
            errors.append(str(e))
    raise ValueError(errors[0])


def _parse_reply(model: dict[str, Any], data: dict[str, Any]) -> providers.Reply:
    """Parse a provider's raw reply for ``model`` (OpenAI chat.completion, Anthropic Messages,
    Gemini GenerateContentResponse, Ollama /api/chat), as the loop does. Raises
    ProviderError(kind='malformed')."""
    return providers.module(model["provider"]).parse_response(data)


def _save_persona(db: Db, c: Caller, p: dict[str, Any], action: str) -> int:
    row = one(db, """INSERT INTO pgagent.persona AS p (tenant_id, name, system_prompt, traits, params)
                     VALUES ($1::uuid, $2, $3, $4, $5)
                     ON CONFLICT (tenant_id, name) DO UPDATE SET system_prompt = excluded.system_prompt,
                        traits = excluded.traits, params = excluded.params, updated_at = now()
                     RETURNING p.persona_id""", ["text", "text", "text", "jsonb", "jsonb"],
              [c.tenant_id, p["name"], p["system_prompt"], p["traits"], p["params"]])
    _audit(db, action, "persona", row["persona_id"], {"name": p["name"]})
    return int(row["persona_id"])


@api("admin")
def create_persona(db: Db, gd: dict, c: Caller, name: str, system_prompt: str, traits: Any = None,
                   params: Any = None) -> int:
    """Create or replace (by name) a persona; returns persona_id. 22023."""
    p = _check_persona({"name": name, "system_prompt": system_prompt, "traits": traits, "params": params})
    existing = _find(db, c, "persona", name, missing_ok=True)
    return _save_persona(db, c, p, "persona_updated" if existing else "persona_created")


@api("admin")
def update_persona(db: Db, gd: dict, c: Caller, name: str, **changes: Any) -> int:
    """Change the given (non-NULL) fields of a persona; returns persona_id. 42704, 22023."""
    p = _overlay(_find(db, c, "persona", name), ("name", "system_prompt", "traits", "params"), changes)
    return _save_persona(db, c, _check_persona(p), "persona_updated")


# ---------------------------------------------------------------------------- tools

TOOL_COLS = ("name", "description", "parameters", "kind", "config", "requires_approval", "timeout_ms")


def _check_tool(db: Db, c: Caller, t: dict[str, Any]) -> dict[str, Any]:
    _name(t["name"], "tool name", TOOL_NAME_RE)
    _check(isinstance(t["description"], str) and t["description"].strip() != "", "description must be non-empty",
           "The model reads it to decide when to call the tool.")
    default = getattr(tools.kind_module(t["kind"]), "PARAMETERS", None) if t["kind"] in tools.KINDS else None
    if t["parameters"] is None and default is not None:
        t["parameters"] = default((t["config"] or {}).get("action") if isinstance(t["config"], dict) else None)
    t["parameters"] = _obj(t["parameters"] if t["parameters"] is not None else
                           {"type": "object", "properties": {}}, "parameters")
    _valid(lambda: validation.check_schema(t["parameters"]), f"tool {t['name']!r}: parameters")
    _check(t["kind"] in tools.KINDS, f"unknown tool kind {t['kind']!r}; valid: {', '.join(sorted(tools.KINDS))}")
    t["config"] = _obj(t["config"], "config")
    _valid(lambda: configschema.validate(f"tool.{t['kind']}", t["config"]), f"tool {t['name']!r}: config")
    _valid(lambda: tools.kind_module(t["kind"]).check_config(t["config"]), f"tool {t['name']!r}: config")
    check_db = getattr(tools.kind_module(t["kind"]), "check_registration", None)
    if check_db is not None:
        check_db(db, c.role, c.superuser, t["config"])
    _check(isinstance(t["requires_approval"], bool), "requires_approval must be true or false")
    _num("timeout_ms", t["timeout_ms"], minimum=1, maximum=600_000, integer=True)
    return t


def _save_tool(db: Db, c: Caller, t: dict[str, Any], action: str) -> int:
    row = one(db, """
        INSERT INTO pgagent.tool AS t (tenant_id, name, description, parameters, kind, config, requires_approval,
                                      timeout_ms)
        VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (tenant_id, name) DO UPDATE
           SET description = excluded.description, parameters = excluded.parameters, kind = excluded.kind,
               config = excluded.config, requires_approval = excluded.requires_approval,
               timeout_ms = excluded.timeout_ms, updated_at = now()
        RETURNING tool_id""", ["text", "text", "text", "jsonb", "text", "jsonb", "bool", "int4"],
        [c.tenant_id, *[t[k] for k in TOOL_COLS]])
    _audit(db, action, "tool", row["tool_id"], {"name": t["name"], "kind": t["kind"], "config": t["config"],
                                                "requires_approval": t["requires_approval"]})
    return int(row["tool_id"])


@api("admin")
def register_tool(db: Db, gd: dict, c: Caller, **a: Any) -> int:
    """Create or replace (by name) a tool; returns tool_id. Checks its JSON Schema (no remote
    $ref), its config against the kind's published schema, and that what it uses exists and
    is usable by the role it runs as. 22023, 42704, 42501."""
    t = _check_tool(db, c, {k: a.get(k) for k in TOOL_COLS})
    existing = _find(db, c, "tool", t["name"], missing_ok=True)
    return _save_tool(db, c, t, "tool_updated" if existing else "tool_registered")


@api("admin")
def update_tool(db: Db, gd: dict, c: Caller, name: str, **changes: Any) -> int:
    """Change the given (non-NULL) fields of a tool; returns tool_id. 42704, 22023."""
    t = _overlay(_find(db, c, "tool", name), TOOL_COLS, changes)
    return _save_tool(db, c, _check_tool(db, c, t), "tool_updated")


# ---------------------------------------------------------------------------- agents

def _check_agent(db: Db, c: Caller, a: dict[str, Any]) -> dict[str, Any]:
    _name(a["name"], "agent name")
    if a["model"] is None:
        row = one(db, "SELECT name FROM pgagent.model WHERE tenant_id = $1::uuid AND kind = 'chat' AND is_default",
                  ["text"], [c.tenant_id])
        if row is None:
            raise NotFound("no model given and the tenant has no default chat model",
                           hint="Pass model => 'name', or register one with is_default => true.")
        a["model"] = row["name"]
    m = _find(db, c, "model", a["model"])
    if m["kind"] != "chat":
        raise InvalidArgument(f"model {a['model']!r} is an embedding model, not a chat model",
                              hint="Give the agent a model registered with kind => 'chat'.")
    if not m["enabled"]:
        raise InvalidState(f"model {a['model']!r} is disabled", hint=f"pgagent.enable_model('{a['model']}')")
    a["model_id"] = m["model_id"]
    a["persona_id"] = _find(db, c, "persona", a["persona"])["persona_id"] if a["persona"] is not None else None
    names = a["tools"] or []
    _check(isinstance(names, list) and all(isinstance(n, str) for n in names), "tools must be an array of tool names")
    found = {r["name"]: r["tool_id"] for r in db.all(
        "SELECT name, tool_id FROM pgagent.tool WHERE tenant_id = $1::uuid AND name = ANY ($2::text[])",
        ["text", "text[]"], [c.tenant_id, names])}
    missing = [n for n in names if n not in found]
    if missing:
        raise NotFound(f"unknown tool(s) {', '.join(missing)}", hint="Register them first with pgagent.register_tool.")
    a["tool_ids"] = [found[n] for n in dict.fromkeys(names)]
    a["config"] = _obj(a["config"], "config")
    _valid(lambda: configschema.validate("agent.config", a["config"]), "agent config")
    if "response_schema" in a["config"]:
        _valid(lambda: validation.check_schema(a["config"]["response_schema"], "response_schema"),
               "agent config: response_schema")
    if "params" in a["config"]:
        _valid(lambda: providers.check_params(m["provider"], a["config"]["params"], what="agent config.params"),
               "agent config.params")
    auto = a["config"].get("auto_approve")
    if isinstance(auto, list):
        unknown = [n for n in auto if n not in found]
        _check(not unknown, f"agent config: auto_approve names tools the agent does not have: {', '.join(unknown)}",
               "List only tools given in tools => ...")
    _check(a["instructions"] is None or isinstance(a["instructions"], str), "instructions must be text")
    return a


def _save_agent(db: Db, c: Caller, a: dict[str, Any], action: str) -> int:
    row = one(db, """
        INSERT INTO pgagent.agent AS a (tenant_id, name, persona_id, model_id, instructions, config)
        VALUES ($1::uuid, $2, $3, $4, $5, $6)
        ON CONFLICT (tenant_id, name) DO UPDATE
           SET persona_id = excluded.persona_id, model_id = excluded.model_id, instructions = excluded.instructions,
               config = excluded.config, updated_at = now()
        RETURNING a.agent_id""", ["text", "text", "int8", "int8", "text", "jsonb"],
        [c.tenant_id, a["name"], a["persona_id"], a["model_id"], a["instructions"], a["config"]])
    aid = int(row["agent_id"])
    db.all("DELETE FROM pgagent.agent_tool WHERE tenant_id = $1::uuid AND agent_id = $2", ["text", "int8"],
           [c.tenant_id, aid])
    db.all("INSERT INTO pgagent.agent_tool (tenant_id, agent_id, tool_id) SELECT $1::uuid, $2, unnest($3::int8[])",
           ["text", "int8", "int8[]"], [c.tenant_id, aid, a["tool_ids"]])
    _audit(db, action, "agent", aid, {"name": a["name"], "model_id": a["model_id"], "persona_id": a["persona_id"],
                                      "tools": a["tools"] or [], "config": a["config"]})
    return aid


AGENT_KEYS = ("name", "model", "tools", "persona", "instructions", "config")


@api("admin")
def create_agent(db: Db, gd: dict, c: Caller, **a: Any) -> int:
    """Create or replace (by name) an agent; returns agent_id. 42704 (unknown model, persona,
    tool), 22023 (config against the published agent.config schema; an embedding model)."""
    agent = _check_agent(db, c, {k: a.get(k) for k in AGENT_KEYS})
    existing = _find(db, c, "agent", agent["name"], missing_ok=True)
    return _save_agent(db, c, agent, "agent_updated" if existing else "agent_created")


@api("admin")
def update_agent(db: Db, gd: dict, c: Caller, name: str, **changes: Any) -> int:
    """Change the given (non-NULL) fields of an agent; returns agent_id. 42704, 22023."""
    cur = one(db, """SELECT a.name, m.name AS model, p.name AS persona, a.instructions, a.config,
                            coalesce((SELECT pg_catalog.array_agg(t.name ORDER BY t.name) FROM pgagent.agent_tool x
                                        JOIN pgagent.tool t ON t.tenant_id = x.tenant_id AND t.tool_id = x.tool_id
                                       WHERE x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id), '{}') AS tools
                       FROM pgagent.agent a JOIN pgagent.model m ON m.tenant_id = a.tenant_id AND m.model_id = a.model_id
                       LEFT JOIN pgagent.persona p ON p.tenant_id = a.tenant_id AND p.persona_id = a.persona_id
                      WHERE a.tenant_id = $1::uuid AND a.name = $2""", ["text", "text"], [c.tenant_id, name])
    if cur is None:
        _find(db, c, "agent", name)
    agent = _overlay(cur, AGENT_KEYS, changes)
    return _save_agent(db, c, _check_agent(db, c, agent), "agent_updated")


@api("viewer", reentrant=True)
def config_schema(db: Db, gd: dict, c: Caller, name: str | None = None) -> Any:
    """The published JSON Schemas that configs are validated against (all, or one by name)."""
    if name is None:
        return {k: configschema.schema(k) for k in configschema.SCHEMAS}
    if name not in configschema.SCHEMAS:
        raise NotFound(f"no config schema {name!r}", hint="valid: " + ", ".join(sorted(configschema.SCHEMAS)))
    return configschema.schema(name)


# ---------------------------------------------------------------------------- secrets and members

@api("admin")
def set_secret(db: Db, gd: dict, c: Caller, name: str, value: str | None) -> None:
    """Store (or replace) the tenant's secret ``name`` encrypted under the key-encryption key."""
    _name(name, "secret name", SECRET_RE)
    _check(isinstance(value, str) and value != "", "a secret value must be non-empty")
    _check("\x00" not in value, "a secret value may not contain NUL characters")
    db.all("""INSERT INTO pgagent.secret AS s (tenant_id, name, ciphertext, created_by)
              VALUES ($1::uuid, $2, pgagent._secret_encrypt($3), $4)
              ON CONFLICT (tenant_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = now(),
                 created_by = excluded.created_by""", ["text", "text", "text", "name"],
           [c.tenant_id, name, value, c.role])
    _audit(db, "secret_set", "secret", name, {})


@api("admin")
def delete_secret(db: Db, gd: dict, c: Caller, name: str) -> bool:
    """Delete the tenant's secret ``name``. 42704, 2BP01 (a model still names it)."""
    users = [r["name"] for r in db.all("SELECT name FROM pgagent.model WHERE tenant_id = $1::uuid AND secret_name = $2",
                                       ["text", "text"], [c.tenant_id, name])]
    if users:
        raise InUse(f"secret {name!r} is used by model(s) {', '.join(users)}",
                    hint="Point those models at another secret (pgagent.update_model) or delete them first.")
    gone = db.all("DELETE FROM pgagent.secret WHERE tenant_id = $1::uuid AND name = $2 RETURNING name",
                  ["text", "text"], [c.tenant_id, name])
    if not gone:
        raise NotFound(f"secret {name!r} does not exist (for this tenant)")
    _audit(db, "secret_deleted", "secret", name, {})
    return True


def _member_tenant(db: Db, c: Caller, tenant: str, role_name: str) -> str:
    row = one(db, "SELECT tenant_id::text AS t FROM pgagent.tenant WHERE name = $1 OR tenant_id::text = $1",
              ["text"], [tenant])
    if row is None or row["t"] != c.tenant_id:
        raise Forbidden(f'role "{c.role}" may not manage members of tenant "{tenant}"',
                        hint="SET pgagent.tenant to that tenant first (you must belong to it).")
    if one(db, "SELECT 1 AS x FROM pg_catalog.pg_roles WHERE rolname = $1", ["name"], [role_name]) is None:
        raise NotFound(f'role "{role_name}" does not exist', hint="CREATE ROLE it first.")
    return row["t"]


@api("admin")
def add_member(db: Db, gd: dict, c: Caller, tenant: str, role_name: str) -> bool:
    """Let members of ``role_name`` act for ``tenant`` (the caller's own). Returns false if they
    already could. 42501, 42704."""
    tid = _member_tenant(db, c, tenant, role_name)
    added = db.all("INSERT INTO pgagent.tenant_member (tenant_id, role_name, added_by) VALUES ($1::uuid, $2, $3) "
                   "ON CONFLICT DO NOTHING RETURNING role_name", ["text", "name", "name"], [tid, role_name, c.role])
    _audit(db, "member_added", "tenant_member", role_name, {"new": bool(added)})
    return bool(added)


@api("admin")
def remove_member(db: Db, gd: dict, c: Caller, tenant: str, role_name: str) -> bool:
    """Remove ``role_name`` from the tenant's members. Returns false if it was not one (the
    tenant's own role_name is not a member row and stays). 42501, 42704."""
    tid = _member_tenant(db, c, tenant, role_name)
    gone = db.all("DELETE FROM pgagent.tenant_member WHERE tenant_id = $1::uuid AND role_name = $2 RETURNING role_name",
                  ["text", "name"], [tid, role_name])
    _audit(db, "member_removed", "tenant_member", role_name, {"removed": bool(gone)})
    return bool(gone)


# ---------------------------------------------------------------------------- conversations

START_SQL = """
WITH a AS (SELECT agent_id, enabled FROM pgagent.agent WHERE tenant_id = $1::uuid AND name = $2),
     ins AS (INSERT INTO pgagent.conversation (tenant_id, agent_id, title, metadata, user_id, created_by)
             SELECT $1::uuid, a.agent_id, $3, $4, $5, $6 FROM a WHERE a.enabled RETURNING conversation_id)
SELECT a.enabled, (SELECT ins.conversation_id FROM ins) AS conversation_id FROM a"""


@api("user")
def start_conversation(db: Db, gd: dict, c: Caller, agent: str, title: str | None = None, metadata: Any = None,
                       user_id: str | None = None) -> int:
    """Start a conversation with the named (enabled) agent; returns conversation_id. user_id
    names the application's end user (apps sharing one database role). 42704, 55000, 22023."""
    _check(user_id is None or (isinstance(user_id, str) and 0 < len(user_id) <= 256),
           "user_id must be a text of 1 to 256 characters")
    row = one(db, START_SQL, ["text", "text", "text", "jsonb", "text", "name"],
              [c.tenant_id, agent, limits.clean_text(title), limits.clean_json(_obj(metadata, "metadata")),
               limits.clean_text(user_id), c.role])
    if row is None:
        raise NotFound(f"agent {agent!r} does not exist (for this tenant)",
                       hint="List them with SELECT name FROM pgagent.agent;")
    if not row["enabled"]:
        raise InvalidState(f"agent {agent!r} is disabled", hint=f"An admin can run pgagent.enable_agent('{agent}').")
    return int(row["conversation_id"])


@api("admin")
def delete_conversation(db: Db, gd: dict, c: Caller, conversation: int, reason: str | None = None) -> dict[str, Any]:
    """Delete a conversation with its turns, steps, interventions, ratings and flags (an audited admin act: the audit event
    keeps each turn's final step hash, so the audit chain stays valid and says what was
    removed). 42704, 55P03 (a turn is being run), 55000 (a turn is still open)."""
    conv = one(db, "SELECT conversation_id FROM pgagent.conversation WHERE tenant_id = $1::uuid AND conversation_id = $2",
               ["text", "int8"], [c.tenant_id, conversation])
    if conv is None:
        raise NotFound(f"conversation {conversation} does not exist (for this tenant)")
    turns = db.all("""SELECT t.turn_id, t.status, (SELECT pg_catalog.encode(s.hash, 'hex') FROM pgagent.step s
                        WHERE s.tenant_id = t.tenant_id AND s.turn_id = t.turn_id ORDER BY s.seq DESC LIMIT 1) AS last_hash,
                       (SELECT count(*) FROM pgagent.step s WHERE s.tenant_id = t.tenant_id AND s.turn_id = t.turn_id) AS steps
                        FROM pgagent.turn t WHERE t.tenant_id = $1::uuid AND t.conversation_id = $2 ORDER BY t.seq""",
                   ["text", "int8"], [c.tenant_id, conversation])
    for t in turns:
        loop.lock_turn(db, gd, c.tenant_id, int(t["turn_id"]))
        if t["status"] in ("running",):
            raise InvalidState(f"turn {t['turn_id']} of conversation {conversation} is running",
                               hint=f"Cancel it first: SELECT pgagent.cancel_turn({t['turn_id']});")
    db.all("SELECT pg_catalog.set_config('pgagent.purging', 'on', true)")
    for table in ("flag", "rating"):   # what people said about the turns, then what operators did
        db.all(f"DELETE FROM pgagent.{table} WHERE tenant_id = $1::uuid AND turn_id IN (SELECT turn_id FROM "
               "pgagent.turn WHERE tenant_id = $1::uuid AND conversation_id = $2)", ["text", "int8"],
               [c.tenant_id, conversation])
    db.all("DELETE FROM pgagent.intervention WHERE tenant_id = $1::uuid AND conversation_id = $2", ["text", "int8"],
           [c.tenant_id, conversation])
    db.all("DELETE FROM pgagent.step WHERE tenant_id = $1::uuid AND turn_id IN (SELECT turn_id FROM pgagent.turn "
           "WHERE tenant_id = $1::uuid AND conversation_id = $2)", ["text", "int8"], [c.tenant_id, conversation])
    db.all("DELETE FROM pgagent.turn WHERE tenant_id = $1::uuid AND conversation_id = $2", ["text", "int8"],
           [c.tenant_id, conversation])
    db.all("DELETE FROM pgagent.conversation WHERE tenant_id = $1::uuid AND conversation_id = $2", ["text", "int8"],
           [c.tenant_id, conversation])
    db.all("SELECT pg_catalog.set_config('pgagent.purging', 'off', true)")
    summary = {"turns": [{"turn_id": int(t["turn_id"]), "status": t["status"], "steps": int(t["steps"]),
                          "last_step_hash": t["last_hash"]} for t in turns], "reason": reason}
    _audit(db, "conversation_deleted", "conversation", conversation, summary)
    return {"conversation_id": conversation, "turns_deleted": len(turns),
            "steps_deleted": sum(int(t["steps"]) for t in turns)}


# ---------------------------------------------------------------------------- turns

def _new_turn(db: Db, gd: dict, c: Caller, conversation: int, content: Any, params: Any, status: str) -> int:
    _check(isinstance(content, str) and content.strip() != "", "content must be a non-empty message")
    content = limits.clean_text(content)
    params = _obj(params, "params")
    conv = one(db, """
        SELECT a.name AS agent, a.enabled AS agent_ok, m.name AS model, m.enabled AS model_ok, m.provider,
               pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(c.tenant_id::text || '/conv/' || $2::text, 0)) AS locked
          FROM pgagent.conversation c
          JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
          JOIN pgagent.model m ON m.tenant_id = a.tenant_id AND m.model_id = a.model_id
         WHERE c.tenant_id = $1::uuid AND c.conversation_id = $2""", ["text", "int8"], [c.tenant_id, conversation])
    if conv is None:
        raise NotFound(f"conversation {conversation} does not exist (for this tenant)",
                       hint="Start one with pgagent.start_conversation(agent).")
    if not conv["agent_ok"]:
        raise InvalidState(f"agent {conv['agent']!r} is disabled", hint=f"pgagent.enable_agent('{conv['agent']}')")
    if not conv["model_ok"]:
        raise InvalidState(f"model {conv['model']!r} of agent {conv['agent']!r} is disabled",
                           hint=f"pgagent.enable_model('{conv['model']}') or give the agent another model.")
    _valid(lambda: providers.check_params(conv["provider"], params), "params")
    busy = one(db, """SELECT turn_id, status FROM pgagent.turn WHERE tenant_id = $1::uuid AND conversation_id = $2
                       AND status IN ('queued', 'running', 'awaiting_approval', 'paused') ORDER BY seq LIMIT 1""",
               ["text", "int8"], [c.tenant_id, conversation])
    if busy is not None:
        raise InvalidState(f"conversation {conversation} has turn {busy['turn_id']} still {busy['status']}",
                           hint="Approve or reject its pending tool calls (pgagent.approve_step), run it "
                                "(CALL pgagent.run_turn) or cancel it (pgagent.cancel_turn) first.")
    turn = one(db, """
        INSERT INTO pgagent.turn (tenant_id, conversation_id, seq, status, user_message, params, created_by,
                                  created_at, started_at)
        SELECT $1::uuid, $2, coalesce(max(t.seq), 0) + 1, $3, $4, $5, $6, n.ts, CASE WHEN $3 = 'running' THEN n.ts END
          FROM (SELECT pg_catalog.clock_timestamp() AS ts) n
          LEFT JOIN pgagent.turn t ON t.tenant_id = $1::uuid AND t.conversation_id = $2
         GROUP BY n.ts
        RETURNING turn_id""", ["text", "int8", "text", "text", "jsonb", "name"],
        [c.tenant_id, conversation, status, content, params, c.role])
    db.all(loop.INSERT_STEP_SQL, loop.INSERT_STEP_TYPES,
           [c.tenant_id, turn["turn_id"], 1, "user_message", {"content": content}, None, None, None,
            None, None, None, None, c.role])
    return int(turn["turn_id"])


def _locked(db: Db, gd: dict, c: Caller, turn_id: int) -> loop.Turn:
    """Lock the caller's tenant's turn and load it. The lock key includes the tenant, so
    locking an id of another tenant (or none) blocks nobody; load then raises NotFound."""
    loop.lock_turn(db, gd, c.tenant_id, turn_id)
    return loop.load(db, c.tenant_id, turn_id, c.role)


@api("user")
def send_message(db: Db, gd: dict, c: Caller, conversation: int, content: str, params: Any = None) -> dict[str, Any]:
    """Record the user message and run the whole turn in the caller's transaction; returns the
    loop summary (:func:`pgagent_core.loop.summary`). 22023, 42704, 55000."""
    turn_id = _new_turn(db, gd, c, conversation, content, params, "running")
    return loop.drive(db, gd, _locked(db, gd, c, turn_id))


@api("user")
def enqueue_message(db: Db, gd: dict, c: Caller, conversation: int, content: str, params: Any = None) -> int:
    """Record the user message as a queued turn (CALL pgagent.run_turn runs it); returns turn_id."""
    return _new_turn(db, gd, c, conversation, content, params, "queued")


@api("user")
def turn_step(db: Db, gd: dict, c: Caller, turn: int) -> dict[str, Any]:
    """One committed unit of CALL pgagent.run_turn (see :func:`pgagent_core.loop.step`)."""
    # a turn this session is running (cached between units) is checked by loop.step itself
    if (c.tenant_id, turn) not in gd.get("pgagent_turns", {}) and one(
            db, "SELECT 1 AS x FROM pgagent.turn WHERE tenant_id = $1::uuid AND turn_id = $2", ["text", "int8"],
            [c.tenant_id, turn]) is None:
        raise NotFound(f"turn {turn} does not exist (for this tenant)", hint="Create it with pgagent.enqueue_message.")
    return loop.step(db, gd, c.tenant_id, turn, c.role)


def _call_step(db: Db, gd: dict, c: Caller, step: int) -> tuple[loop.Turn, dict[str, Any]]:
    row = one(db, "SELECT turn_id, kind FROM pgagent.step WHERE tenant_id = $1::uuid AND step_id = $2",
              ["text", "int8"], [c.tenant_id, step])
    if row is None:
        raise NotFound(f"step {step} does not exist (for this tenant)",
                       hint="SELECT step_id FROM pgagent.pending_approvals lists the calls that wait.")
    if row["kind"] != "tool_call":
        raise InvalidArgument(f"step {step} is a {row['kind']} step, not a tool_call")
    turn = _locked(db, gd, c, int(row["turn_id"]))
    return turn, next(s for s in turn.steps if s["step_id"] == step)


def _decide(db: Db, c: Caller, turn: loop.Turn, call: dict[str, Any], approved: bool, note: str | None) -> dict[str, Any]:
    """Record the calling role's decision on ``call`` (a tool_call step of ``turn``, locked):
    the approval step, the audit event and, for a rejection, the tool_result that tells the
    model. Raises 55000 (no approval needed, already decided, turn not waiting), 42501
    (four-eyes rule)."""
    step = call["step_id"]
    if not call["payload"].get("requires_approval"):
        raise InvalidState(f"tool call {step} does not require approval", hint=f"SELECT pgagent.process_tool_call({step});")
    if loop.decision(turn, step) is not None:
        raise InvalidState(f"tool call {step} was already decided")
    if turn.status != "awaiting_approval":
        raise InvalidState(f"turn {turn.turn_id} is {turn.status}, not awaiting_approval")
    if turn.cfg["created_by"] == c.role and not c.superuser and not turn.settings.get("allow_self_approval"):
        raise Forbidden(f'role "{c.role}" started turn {turn.turn_id} and may not approve its own tool call',
                        detail="Approvals need a second person (four-eyes rule).",
                        hint="Another operator decides, or an admin sets the agent's config "
                             "allow_self_approval => true.")
    at = one(db, "SELECT pg_catalog.clock_timestamp()::text AS at", [], [])["at"]
    d = loop.add_step(db, turn, "approval", {"approved": approved, "note": note, "decided_by": c.role,
                                             "session_user": c.session_user, "decided_at": at}, parent=step)
    _audit(db, "approval_decided", "step", step, {"approved": approved, "note": note, "turn_id": turn.turn_id,
                                                   "tool": call["tool_name"], "approval_step_id": d["step_id"]})
    if not approved:
        loop.reject_result(db, turn, call, d)
    if all(loop.decision(turn, x["step_id"]) is not None for x in loop.pending_calls(turn)
           if x["payload"].get("requires_approval")):
        # a worker parked the turn (lease until infinity): every call is decided, so workers may
        # claim it again (pgagent.claim_turn) and continue it
        db.all("""WITH w AS (UPDATE pgagent.turn SET lease_expires_at = pg_catalog.now()
                              WHERE tenant_id = $1::uuid AND turn_id = $2 AND lease_expires_at = 'infinity'
                             RETURNING tenant_id, turn_id)
                  SELECT pg_catalog.pg_notify('pgagent_queue_' || n.events_key, w.turn_id::text)
                    FROM w JOIN pgagent.tenant n USING (tenant_id)""",
               ["text", "int8"], [turn.tenant_id, turn.turn_id])
        if turn.cfg.get("parent_turn_id") is not None:   # a child turn: its root waits for it
            delegation.wake_ancestors(db, turn.tenant_id, turn.turn_id)
    return d


@api("operator")
def approve_step(db: Db, gd: dict, c: Caller, step: int, approved: Any, note: str | None = None) -> dict[str, Any]:
    """Record a human decision on a tool call that awaits approval, signed by the calling role
    (decided_by) and the session user. A rejection also records the tool_result that tells the
    model. A role may not decide on a turn it started itself unless the agent's config has
    allow_self_approval (or it is a superuser). 22023, 42704, 42501, 55000."""
    _check(isinstance(approved, bool), "approved must be true or false")
    turn, call = _call_step(db, gd, c, step)
    d = _decide(db, c, turn, call, approved, note)
    return {"approval_step_id": d["step_id"], "tool_call_step_id": step, "approved": approved,
            "turn_id": turn.turn_id, "turn_status": turn.status, "decided_by": c.role,
            "pending": [x["step_id"] for x in loop.pending_calls(turn) if loop.decision(turn, x["step_id"]) is None]}


BULK_SQL = """
SELECT s.step_id, s.turn_id, t.created_by::text AS created_by
  FROM pgagent.step s
  JOIN pgagent.turn t ON t.tenant_id = s.tenant_id AND t.turn_id = s.turn_id
  JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
  JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
 WHERE t.tenant_id = $1::uuid AND t.status = 'awaiting_approval' AND s.kind = 'tool_call'
   AND (s.payload ->> 'requires_approval')::boolean
   AND ($2::text IS NULL OR a.name = $2) AND ($3::text IS NULL OR s.tool_name = $3)
   AND NOT EXISTS (SELECT 1 FROM pgagent.step d WHERE d.tenant_id = s.tenant_id AND d.parent_step_id = s.step_id)
 ORDER BY s.turn_id, s.seq"""


@api("operator")
def bulk_approve(db: Db, gd: dict, c: Caller, step_ids: Any = None, agent: str | None = None, tool: str | None = None,
                 approved: Any = True, note: str | None = None, resume: Any = False) -> int:
    """Decide many waiting tool calls at once: those in ``step_ids``, or every call waiting for
    approval that matches the ``agent`` and/or ``tool`` filter (at least one of the three must
    be given). Each decision is an approval step and an audit event, exactly as approve_step
    records it; then each touched turn runs its decided calls the way process_tool_call does
    (rejections become error results; a paused conversation parks its turn), and with
    ``resume`` continues to its next stop. Listed ids are all-or-nothing (any that cannot be
    decided raises); with a filter, calls in turns the caller started itself are skipped
    (four-eyes rule). Returns how many calls were decided. Audited per call (approval_decided).
    Raises 22023, 42704, 42501, 55000, 55P03."""
    _check(isinstance(approved, bool), "approved must be true or false")
    _check(isinstance(resume, bool), "resume must be true or false")
    _check(step_ids is not None or agent is not None or tool is not None,
           "give step_ids, or an agent and/or tool filter", "e.g. pgagent.bulk_approve(tool => 'refund', approved => true)")
    if step_ids is not None:
        _check(isinstance(step_ids, list) and len(step_ids) > 0
               and all(isinstance(x, int) and not isinstance(x, bool) for x in step_ids),
               "step_ids must be a non-empty array of step ids")
        _check(len(set(step_ids)) == len(step_ids), "step_ids lists a step twice")
        targets: list[tuple[int, int]] = []
        for sid in step_ids:
            row = one(db, "SELECT turn_id, kind FROM pgagent.step WHERE tenant_id = $1::uuid AND step_id = $2",
                      ["text", "int8"], [c.tenant_id, sid])
            if row is None:
                raise NotFound(f"step {sid} does not exist (for this tenant)")
            if row["kind"] != "tool_call":
                raise InvalidArgument(f"step {sid} is a {row['kind']} step, not a tool_call")
            targets.append((int(row["turn_id"]), sid))
    else:
        rows = db.all(BULK_SQL, ["text", "text", "text"], [c.tenant_id, agent, tool])
        allow_self = c.superuser
        targets = [(int(r["turn_id"]), int(r["step_id"])) for r in rows if allow_self or r["created_by"] != c.role
                   or _self_approval_allowed(db, c, int(r["turn_id"]))]
    decided = 0
    by_turn: dict[int, list[int]] = {}
    for turn_id, sid in targets:
        by_turn.setdefault(turn_id, []).append(sid)
    for turn_id, sids in by_turn.items():
        turn = _locked(db, gd, c, turn_id)
        for sid in sids:
            call = next(s for s in turn.steps if s["step_id"] == sid)
            _decide(db, c, turn, call, approved, note)
            decided += 1
        if resume:
            loop.drive(db, gd, turn)
            continue
        state = loop.CONTINUE
        while state == loop.CONTINUE and loop.pending_calls(turn):
            waiting = [x for x in loop.pending_calls(turn) if x["payload"].get("requires_approval")
                       and loop.decision(turn, x["step_id"]) is None]
            if waiting:
                break   # the turn still waits for other decisions
            state = loop.guarded_advance(db, gd, turn)
    return decided


def _self_approval_allowed(db: Db, c: Caller, turn_id: int) -> bool:
    row = one(db, "SELECT coalesce((a.config ->> 'allow_self_approval')::boolean, false) AS ok FROM pgagent.turn t "
                  "JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id "
                  "JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id "
                  "WHERE t.tenant_id = $1::uuid AND t.turn_id = $2", ["text", "int8"], [c.tenant_id, turn_id])
    return bool(row and row["ok"])


@api("operator")
def process_tool_call(db: Db, gd: dict, c: Caller, step: int, resume: bool = True) -> dict[str, Any]:
    """Run an approved (or approval-free) tool call and, with ``resume``, continue the turn in
    the caller's transaction. Returns the loop summary. 22023, 42704, 55000."""
    turn, call = _call_step(db, gd, c, step)
    if turn.status in loop.TERMINAL:
        raise InvalidState(f"turn {turn.turn_id} is already {turn.status}",
                           hint=f"SELECT * FROM pgagent.turn_summary WHERE turn_id = {turn.turn_id};")
    if call in loop.pending_calls(turn):
        d = loop.decision(turn, step)
        if call["payload"].get("requires_approval") and d is None:
            raise InvalidState(f"tool call {step} awaits approval",
                               hint=f"SELECT pgagent.approve_step({step}, true, 'why');")
        if d is not None and not d["payload"]["approved"]:
            loop.reject_result(db, turn, call, d)
        elif not loop.gate(db, turn):   # a paused conversation parks the turn instead
            loop.tool_call_guarded(db, gd, turn, call)
    if not resume:
        return loop.summary(turn)
    return loop.drive(db, gd, turn)


@api("operator")
def cancel_turn(db: Db, gd: dict, c: Caller, turn: int, reason: str | None = None) -> dict[str, Any]:
    """Cancel a queued, parked or crashed turn (an error step records who and why). 42704,
    55000 (already finished), 55P03 (being run right now)."""
    t = _locked(db, gd, c, turn)
    if t.status in loop.TERMINAL:
        raise InvalidState(f"turn {turn} is already {t.status}")
    loop.add_step(db, t, "error", {"message": f"cancelled by {c.role}" + (f": {reason}" if reason else ""),
                                   "error_kind": "cancelled", "cancelled_by": c.role,
                                   "session_user": c.session_user})
    t.error = limits.clean_text(reason) or "cancelled"
    loop.set_status(db, t, "cancelled")
    _audit(db, "turn_cancelled", "turn", turn, {"reason": reason})
    return loop.summary(t)


def _external(db: Db, gd: dict, t: loop.Turn) -> dict[str, Any]:
    state = loop.CONTINUE
    while state == loop.CONTINUE:
        state = loop.guarded_advance(db, gd, t, external=True)
    out = loop.summary(t)
    if state == loop.NEEDS_LLM:
        m = t.cfg["model"]
        req = t.next_request or loop.request_for(db, t, gd)
        out["request"] = {**req, "model": m["model_name"], "provider": m["provider"], "base_url": m["base_url"],
                          "tool_mode": m["tool_mode"]}
    else:
        out["request"] = None
    return out


@api("user")
def prepare_turn(db: Db, gd: dict, c: Caller, turn: int) -> dict[str, Any]:
    """External runtime mode: advance the turn (as the loop would, running due tool calls) up
    to its next LLM call and return the summary plus ``request``: the exact request the loop
    would send ({messages, tools, params, response_format, model, provider, base_url,
    tool_mode}), or null when the turn is finished or waits for an approval. 42704, 55P03."""
    return _external(db, gd, _locked(db, gd, c, turn))


@api("user")
def submit_reply(db: Db, gd: dict, c: Caller, turn: int, reply: Any) -> dict[str, Any]:
    """External runtime mode: continue the turn with ``reply`` (the provider's raw reply: an
    OpenAI chat.completion object, or an Anthropic Messages reply for anthropic models), with
    the loop's own parsing, validation, tool execution, approvals and step log. A malformed
    reply is a recorded error step (and fails the turn once max_retries is used up). Returns
    like prepare_turn. 42704, 55000 (the turn expects no reply now), 55P03."""
    t = _locked(db, gd, c, turn)
    state = loop.CONTINUE
    while state == loop.CONTINUE:
        state = loop.guarded_advance(db, gd, t, external=True)
    if state != loop.NEEDS_LLM:
        raise InvalidState(f"turn {turn} expects no LLM reply now (status {t.status})",
                           hint=f"SELECT pgagent.prepare_turn({turn}); tells what it waits for.")
    m = t.cfg["model"]
    try:
        if not isinstance(reply, dict):
            raise providers.ProviderError("malformed reply: expected a JSON object", kind="malformed", retryable=True)
        parsed = _parse_reply(m, reply)
    except providers.ProviderError as e:
        loop.record_llm_failure(db, t, e)
    else:
        loop.record_reply(db, t, parsed, gd)
    return _external(db, gd, t)


# ---------------------------------------------------------------------------- embeddings

@api("user", reentrant=True)
def embed(db: Db, gd: dict, c: Caller, input: list[str], model: str | None = None, params: Any = None) -> list[str]:
    """Embed each text with the named (or the tenant's default) embedding model; returns one
    pgvector literal (``"[0.1,...]"``) per input. Keyed models go through pgagent._llm_call.
    22023 (empty input, bad params), 42704 (no such enabled embedding model), 58000 (the
    provider failed: the message says how)."""
    _check(bool(input) and all(isinstance(t, str) and t for t in input), "input must be one or more non-empty texts")
    m, embed_ = loop.embedder(db, gd, c.tenant_id, model)
    extra = _obj(params, "params")
    _valid(lambda: providers.check_params(m["provider"], extra, kind="embedding"), "params")
    vectors = embed_([limits.clean_text(t) for t in input], extra)
    return ["[" + ",".join(repr(x) for x in v) + "]" for v in vectors]


__all__ = ["API", "Busy", "Caller", "dispatch", "llm_call", "run_turn_proc"]


# The other API modules register their functions with registry.api when imported.
from . import budget, evals_api, graph_api, hooks, knowledge_api, memory_api, ops, teams  # noqa: E402,F401


def cron_next(cron: str, tz: str, after: str) -> str:
    """Body of ``pgagent._cron_py``: JSON text ``{"next": "<ISO 8601 UTC>"}``, the first due time
    of a cron expression in a time zone strictly after ``after`` (timestamptz as text; see
    :func:`pgagent_core.schedule.next_fire`), or ``{"error": {message, sqlstate, detail, hint}}``
    (22023: a bad expression or time zone)."""
    from datetime import datetime

    from . import schedule
    try:
        return _jsonb({"next": schedule.next_fire(cron, tz, datetime.fromisoformat(after)).isoformat()})
    except PgAgentError as e:
        return _jsonb({"error": e.as_dict()})
