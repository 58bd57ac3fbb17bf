-- Agents that call agents (issue 12, python/pgagent_core/delegation.py): the tree of turns an
-- agent tool call starts.

CREATE OR REPLACE FUNCTION pgagent.turn_tree(turn bigint)
RETURNS TABLE (turn_id bigint, parent_turn_id bigint, parent_step_id bigint, depth integer, path bigint[],
               agent text, status text, user_message text, answer text, error text, llm_calls integer,
               prompt_tokens bigint, completion_tokens bigint, cost_usd numeric, subtree_cost_usd numeric,
               subtree_tokens bigint)
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE root AS (   -- walk up to the root first: any turn of a tree shows the whole tree
        SELECT t.tenant_id, t.turn_id, t.parent_turn_id, 0 AS n FROM pgagent.turn t WHERE t.turn_id = turn_tree.turn
        UNION ALL
        SELECT p.tenant_id, p.turn_id, p.parent_turn_id, root.n + 1
          FROM root JOIN pgagent.turn p ON p.tenant_id = root.tenant_id AND p.turn_id = root.parent_turn_id
         WHERE root.n < 64),
    tree AS (
        SELECT r.tenant_id, r.turn_id, ARRAY[r.turn_id] AS path FROM root r WHERE r.parent_turn_id IS NULL
        UNION ALL
        SELECT c.tenant_id, c.turn_id, tree.path || c.turn_id
          FROM tree JOIN pgagent.turn c ON c.parent_turn_id = tree.turn_id AND c.tenant_id = tree.tenant_id
         WHERE cardinality(tree.path) < 64)
    SELECT t.turn_id, t.parent_turn_id, t.parent_step_id, t.depth, tree.path, a.name::text, t.status, t.user_message,
           t.answer, t.error, t.llm_calls, t.prompt_tokens, t.completion_tokens, t.cost_usd,
           (SELECT sum(d.cost_usd) FROM tree s JOIN pgagent.turn d ON d.tenant_id = s.tenant_id AND d.turn_id = s.turn_id
             WHERE s.path[1:cardinality(tree.path)] = tree.path),
           (SELECT sum(d.prompt_tokens + d.completion_tokens) FROM tree s
              JOIN pgagent.turn d ON d.tenant_id = s.tenant_id AND d.turn_id = s.turn_id
             WHERE s.path[1:cardinality(tree.path)] = tree.path)::bigint
      FROM tree
      JOIN pgagent.turn t ON t.tenant_id = tree.tenant_id AND t.turn_id = tree.turn_id
      JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
      JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
     ORDER BY tree.path
$$;
COMMENT ON FUNCTION pgagent.turn_tree(bigint) IS
  'Viewer: the tree of turns that turn belongs to (its root and every child turn agent tool calls started, depth first): each turn''s agent, status, message, answer or error, its own usage (tokens, cost_usd in USD) and its subtree''s (subtree_cost_usd, subtree_tokens: the turn and everything below it). Reads with the caller''s rights (row level security applies). Empty for a turn the caller cannot see.';
GRANT EXECUTE ON FUNCTION pgagent.turn_tree(bigint) TO pgagent_viewer;

-- ---------------------------------------------------------------------------- teams
CREATE OR REPLACE FUNCTION pgagent.create_team(name text, members text[], mode text DEFAULT 'round_robin',
                                               config jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('create_team', pg_catalog.jsonb_build_object('name', name, 'members', members, 'mode', mode, 'config', config));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.create_team(text, text[], text, jsonb) IS
  'Admin: create (or replace, by name) a team of agents of the tenant; returns team_id. mode: supervisor (config.supervisor names the agent that delegates to the members; it gets an agent tool ask_<member> per member), round_robin, debate (config.judge decides), consensus (config.quorum: share of members whose votes must agree, default 2/3). config (pgagent.config_schema(''team.config'')): supervisor, judge, quorum, max_rounds (default 3), instructions. Audited (team_created). Raises 22023, 42704 (an unknown agent). See docs/multi-agent.md.';
REVOKE ALL ON FUNCTION pgagent.create_team(text, text[], text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.create_team(text, text[], text, jsonb) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.drop_team(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('drop_team', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.drop_team(text) IS
  'Admin: drop a team with the records of its discussions (the members'' turns and conversations stay). Audited (team_dropped). Raises 42704.';
REVOKE ALL ON FUNCTION pgagent.drop_team(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.drop_team(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.team_discuss(team text, topic text, max_rounds integer DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('team_discuss', pg_catalog.jsonb_build_object('team', team, 'topic', topic, 'max_rounds', max_rounds));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.team_discuss(text, text, integer) IS
  'User: run a discussion of the team on topic in the caller''s transaction; every message is the answer of a turn of one member (recorded in pgagent.discussion_turn). Returns {discussion_id, team, mode, status (completed, no_consensus, failed), rounds, outcome, detail, messages: [{seq, round, role, agent, turn_id, answer, vote}]}. max_rounds 1..20 (default: the team''s config, 3). Raises 22023, 42704, 55000. See docs/multi-agent.md.';
REVOKE ALL ON FUNCTION pgagent.team_discuss(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.team_discuss(text, text, integer) TO pgagent_user;

CREATE OR REPLACE VIEW pgagent.team_discussions WITH (security_invoker = true) AS
SELECT d.tenant_id, d.discussion_id, tm.name AS team, d.mode, d.topic, d.status, d.rounds, d.max_rounds, d.outcome,
       u.messages, u.llm_calls, u.tokens, u.cost_usd, d.detail, d.created_by, d.created_at, d.finished_at
  FROM pgagent.discussion d
  JOIN pgagent.team tm ON tm.tenant_id = d.tenant_id AND tm.team_id = d.team_id
  CROSS JOIN LATERAL (
       SELECT count(*) AS messages, sum(t.llm_calls) AS llm_calls, sum(t.prompt_tokens + t.completion_tokens) AS tokens,
              sum(t.cost_usd) AS cost_usd
         FROM pgagent.discussion_turn x
         JOIN pgagent.turn t ON t.tenant_id = x.tenant_id AND t.turn_id = x.turn_id
        WHERE x.tenant_id = d.tenant_id AND x.discussion_id = d.discussion_id) u;
COMMENT ON VIEW pgagent.team_discussions IS
  'Team discussions (pgagent.team_discuss): team, mode, topic, status, rounds, outcome, and the messages'' count and usage (their turns'' LLM calls, tokens and cost in USD; a supervisor''s delegations are counted once, in the member turns). Reads with the caller''s rights.';
COMMENT ON COLUMN pgagent.team_discussions.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.team_discussions.discussion_id IS 'The discussion.';
COMMENT ON COLUMN pgagent.team_discussions.team IS 'The team''s name.';
COMMENT ON COLUMN pgagent.team_discussions.mode IS 'supervisor, round_robin, debate or consensus.';
COMMENT ON COLUMN pgagent.team_discussions.topic IS 'What the team discussed.';
COMMENT ON COLUMN pgagent.team_discussions.status IS 'running, completed, no_consensus or failed.';
COMMENT ON COLUMN pgagent.team_discussions.rounds IS 'Rounds held.';
COMMENT ON COLUMN pgagent.team_discussions.max_rounds IS 'Rounds allowed.';
COMMENT ON COLUMN pgagent.team_discussions.outcome IS 'The result: the supervisor''s or judge''s answer, the last round-robin message, or the vote that reached the quorum (NULL without one).';
COMMENT ON COLUMN pgagent.team_discussions.messages IS 'Messages (member turns) in the discussion.';
COMMENT ON COLUMN pgagent.team_discussions.llm_calls IS 'LLM calls of the messages'' turns.';
COMMENT ON COLUMN pgagent.team_discussions.tokens IS 'Prompt and completion tokens of the messages'' turns.';
COMMENT ON COLUMN pgagent.team_discussions.cost_usd IS 'Cost of the messages'' turns, USD.';
COMMENT ON COLUMN pgagent.team_discussions.detail IS 'Per mode: consensus tallies per round and the quorum, the judge, the number of delegations, or the error of a failed discussion.';
COMMENT ON COLUMN pgagent.team_discussions.created_by IS 'The role that started it.';
COMMENT ON COLUMN pgagent.team_discussions.created_at IS 'When it started.';
COMMENT ON COLUMN pgagent.team_discussions.finished_at IS 'When it ended.';
GRANT SELECT ON pgagent.team_discussions TO pgagent_viewer;

CREATE OR REPLACE VIEW pgagent.discussion_messages WITH (security_invoker = true) AS
SELECT x.tenant_id, x.discussion_id, x.seq, x.round, x.role, x.agent, x.turn_id, t.status AS turn_status,
       t.user_message AS prompt, t.answer AS message, x.vote, t.cost_usd, t.finished_at
  FROM pgagent.discussion_turn x
  JOIN pgagent.turn t ON t.tenant_id = x.tenant_id AND t.turn_id = x.turn_id;
COMMENT ON VIEW pgagent.discussion_messages IS
  'Every message of every team discussion in the order spoken: who said it (agent, role), in which round, what it was asked (prompt) and answered (message), its vote (consensus), and its turn (whose steps show how it was made). Reads with the caller''s rights.';
COMMENT ON COLUMN pgagent.discussion_messages.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.discussion_messages.discussion_id IS 'The discussion.';
COMMENT ON COLUMN pgagent.discussion_messages.seq IS 'Order in the discussion (1, 2, ...).';
COMMENT ON COLUMN pgagent.discussion_messages.round IS 'The round.';
COMMENT ON COLUMN pgagent.discussion_messages.role IS 'member, judge or supervisor.';
COMMENT ON COLUMN pgagent.discussion_messages.agent IS 'The agent that spoke.';
COMMENT ON COLUMN pgagent.discussion_messages.turn_id IS 'The turn whose answer the message is.';
COMMENT ON COLUMN pgagent.discussion_messages.turn_status IS 'The turn''s status.';
COMMENT ON COLUMN pgagent.discussion_messages.prompt IS 'What the agent was asked (the turn''s user message: the topic and what others said).';
COMMENT ON COLUMN pgagent.discussion_messages.message IS 'What it answered.';
COMMENT ON COLUMN pgagent.discussion_messages.vote IS 'Consensus: the vote its VOTE: line states (NULL without one).';
COMMENT ON COLUMN pgagent.discussion_messages.cost_usd IS 'Cost of the turn, USD.';
COMMENT ON COLUMN pgagent.discussion_messages.finished_at IS 'When the turn ended.';
GRANT SELECT ON pgagent.discussion_messages TO pgagent_viewer;
