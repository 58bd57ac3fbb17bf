-- Many agents (issue 12): who may call what, the new tables' and columns' shape, row level
-- security, the views, and bad input refused with documented SQLSTATEs. No model is called here
-- (tests/python/test_multi_agent.py and test_providers.py run turns against a scripted server).
BEGIN;
SELECT plan(35);

-- ---------------------------------------------------------------- grants
SELECT ok(pg_catalog.has_function_privilege('pgagent_admin', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_operator', f, 'EXECUTE'), f || ' is for admins')
  FROM unnest(ARRAY['pgagent.create_team(text,text[],text,jsonb)', 'pgagent.drop_team(text)']) AS f;
SELECT ok(pg_catalog.has_function_privilege('pgagent_user', 'pgagent.team_discuss(text,text,integer)', 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_viewer', 'pgagent.team_discuss(text,text,integer)', 'EXECUTE'),
          'users run discussions, viewers do not');
SELECT ok(pg_catalog.has_function_privilege('pgagent_viewer', 'pgagent.turn_tree(bigint)', 'EXECUTE')
          AND NOT (SELECT prosecdef FROM pg_proc WHERE oid = 'pgagent.turn_tree(bigint)'::regprocedure),
          'viewers read turn trees, with their own rights');
SELECT ok(pg_catalog.has_table_privilege('pgagent_viewer', 'pgagent.' || v, 'SELECT')
          AND (SELECT 'security_invoker=true' = ANY (reloptions) FROM pg_class WHERE oid = ('pgagent.' || v)::regclass),
          v || ': viewers read it, as themselves')
  FROM unnest(ARRAY['team_discussions', 'discussion_messages']) AS v;
SELECT ok(NOT pg_catalog.has_table_privilege('pgagent_admin', 'pgagent.' || t, p), 'no admin ' || p || ' on ' || t)
  FROM unnest(ARRAY['team', 'discussion', 'discussion_turn']) AS t, unnest(ARRAY['INSERT', 'UPDATE', 'DELETE']) AS p;

-- ---------------------------------------------------------------- shape
SELECT ok((SELECT relforcerowsecurity FROM pg_class WHERE oid = ('pgagent.' || t)::regclass), t || ': RLS forced')
  FROM unnest(ARRAY['team', 'discussion', 'discussion_turn']) AS t;
SELECT col_is_pk('pgagent', 'discussion_turn', ARRAY['tenant_id', 'discussion_id', 'seq'],
                 'a discussion''s messages are keyed by tenant and order');
SELECT has_column('pgagent', 'turn', c, 'turn.' || c) FROM unnest(ARRAY['parent_turn_id', 'parent_step_id', 'depth']) AS c;
SELECT fk_ok('pgagent', 'turn', ARRAY['tenant_id', 'parent_turn_id'], 'pgagent', 'turn', ARRAY['tenant_id', 'turn_id'],
             'a child turn''s parent is a turn of the same tenant');
SELECT ok((SELECT indisunique FROM pg_index WHERE indexrelid = 'pgagent.turn_child'::regclass),
          'one child turn per agent tool call');
SELECT ok(pg_catalog.pg_get_constraintdef((SELECT oid FROM pg_constraint WHERE conname = 'model_provider_check'))
          LIKE '%gemini%ollama%', 'providers gemini and ollama are allowed');

-- ---------------------------------------------------------------- bad input
SELECT throws_ok($$SELECT pgagent.create_team('t', ARRAY['nobody', 'else'])$$, '42704', NULL, 'unknown members');
SELECT throws_ok($$SELECT pgagent.create_team('t', ARRAY[]::text[])$$, '22023', NULL, 'no members');
SELECT throws_ok($$SELECT pgagent.create_team('bad name!', ARRAY['a', 'b'])$$, '22023', NULL, 'a bad team name');
SELECT throws_ok($$SELECT pgagent.team_discuss('nope', 'topic')$$, '42704', NULL, 'an unknown team');
SELECT throws_ok($$SELECT pgagent.drop_team('nope')$$, '42704', NULL, 'dropping an unknown team');
SELECT throws_ok($$SELECT pgagent.register_tool('ask', 'x', '{"type": "object"}', kind => 'agent', config => '{}')$$,
                 '22023', NULL, 'an agent tool without config.agent');
SELECT throws_ok($$SELECT pgagent.register_tool('ask', 'x', '{"type": "object"}', kind => 'agent',
                   config => '{"agent": "a", "max_depth": 11}')$$, '22023', NULL, 'max_depth above 10');
SELECT throws_ok($$SELECT pgagent.register_model('g', provider => 'gemini', kind => 'embedding')$$, '22023', NULL,
                 'gemini models chat only (embeddings go through an openai-compatible endpoint)');
SELECT throws_ok($$SELECT pgagent.register_model('g', preset => 'azure')$$, '22023', NULL, 'an unknown preset');
SELECT is((SELECT pgagent.config_schema('team.config') -> 'properties' ? 'quorum'), true, 'team.config is published');

SELECT * FROM finish();
ROLLBACK;
