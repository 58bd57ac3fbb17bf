-- The operator API (issue 8): interventions, ratings and flags. Same wrapper pattern as
-- 40_api.sql (SECURITY DEFINER PL/pgSQL around pgagent._py, search_path pinned); the Python side
-- is python/pgagent_core/ops.py (and bulk_approve in pl.py). Replayable.

CREATE OR REPLACE FUNCTION pgagent.bulk_approve(step_ids bigint[] DEFAULT NULL, agent text DEFAULT NULL, tool text DEFAULT NULL, approved boolean DEFAULT true, note text DEFAULT NULL, resume boolean DEFAULT false)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('bulk_approve', pg_catalog.jsonb_build_object('step_ids', step_ids, 'agent', agent, 'tool', tool, 'approved', approved, 'note', note, 'resume', resume));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::integer;
END $$;
COMMENT ON FUNCTION pgagent.bulk_approve(bigint[], text, text, boolean, text, boolean) IS
  'Operator: decide many tool calls waiting for approval at once: those in step_ids, or every waiting call matching the agent and/or tool filter. Each decision is an approval step and an audit event (approval_decided), as approve_step records it; each touched turn then runs its decided calls as process_tool_call does (with resume, continues to its next stop). Listed ids are all-or-nothing; with a filter, calls in turns the caller started are skipped (four-eyes rule). Returns how many calls were decided. Raises 22023, 42704, 42501, 55000, 55P03.';
REVOKE ALL ON FUNCTION pgagent.bulk_approve(bigint[], text, text, boolean, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.bulk_approve(bigint[], text, text, boolean, text, boolean) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.inject_message(conversation bigint, content text, role text DEFAULT 'system')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('inject_message', pg_catalog.jsonb_build_object('conversation', conversation, 'content', content, 'role', role));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.inject_message(bigint, text, text) IS
  'Operator: add a message (role system or user) to a conversation''s context from the next LLM call on; a turn that is running, queued, paused or waiting records it as an intervention step at its next step boundary, later turns see it in their history. Returns the intervention_id. Audited (message_injected). Raises 22023, 42704.';
REVOKE ALL ON FUNCTION pgagent.inject_message(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.inject_message(bigint, text, text) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.override_response(turn bigint, content text, reason text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('override_response', pg_catalog.jsonb_build_object('turn', turn, 'content', content, 'reason', reason));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.override_response(bigint, text, text) IS
  'Operator: replace the answer of a completed turn (what the user sees and what later turns send as history); the model''s answer stays in the response step and an intervention step records the new one, the old one, who and why. Returns the turn summary. Audited (response_overridden). Raises 22023, 42704, 55000 (not completed), 55P03.';
REVOKE ALL ON FUNCTION pgagent.override_response(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.override_response(bigint, text, text) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.pause_conversation(conversation bigint, reason text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('pause_conversation', pg_catalog.jsonb_build_object('conversation', conversation, 'reason', reason));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.pause_conversation(bigint, text) IS
  'Operator: pause a conversation: no new LLM call or tool call starts in it; its queued turns are parked now (status paused); a running turn, or one waiting for approval (approvals may still be given), parks itself at its next step boundary. Returns {conversation_id, paused_at, paused_turns, active_turns}. Audited (conversation_paused). Raises 42704, 55000 (already paused).';
REVOKE ALL ON FUNCTION pgagent.pause_conversation(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.pause_conversation(bigint, text) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.resume_conversation(conversation bigint)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('resume_conversation', pg_catalog.jsonb_build_object('conversation', conversation));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.resume_conversation(bigint) IS
  'Operator: resume a paused conversation and queue its paused turns again (CALL pgagent.run_turn continues each from where it stopped). Returns {conversation_id, requeued_turns}. Audited (conversation_resumed). Raises 42704, 55000 (not paused), 55P03.';
REVOKE ALL ON FUNCTION pgagent.resume_conversation(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.resume_conversation(bigint) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.retry_turn(turn bigint, run boolean DEFAULT true)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('retry_turn', pg_catalog.jsonb_build_object('turn', turn, 'run', run));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.retry_turn(bigint, boolean) IS
  'Operator: run a failed turn again from its last good step (its steps, tokens and cost are kept; max_steps and max_tool_errors count afresh); with run (default) it is driven now in the caller''s transaction, else CALL pgagent.run_turn runs it. Returns the turn summary. Audited (turn_retried). Raises 42704, 55000 (the turn did not fail), 55P03.';
REVOKE ALL ON FUNCTION pgagent.retry_turn(bigint, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.retry_turn(bigint, boolean) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.fork_conversation(conversation bigint, at_step bigint, agent text DEFAULT NULL, title text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('fork_conversation', pg_catalog.jsonb_build_object('conversation', conversation, 'at_step', at_step, 'agent', agent, 'title', title));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.fork_conversation(bigint, bigint, text, text) IS
  'Operator: a new conversation whose history is this one''s up to and including step at_step, optionally with another agent (model, prompt, tools), for replaying; a turn cut in the middle becomes a queued turn that CALL pgagent.run_turn continues. The original is untouched. Returns {conversation_id, forked_from, at_step, turns_copied, steps_copied, open_turn_id}. Audited (conversation_forked). Raises 22023, 42704.';
REVOKE ALL ON FUNCTION pgagent.fork_conversation(bigint, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.fork_conversation(bigint, bigint, text, text) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.rate_turn(turn bigint, rating integer DEFAULT NULL, comment text DEFAULT NULL, thumbs_up boolean DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('rate_turn', pg_catalog.jsonb_build_object('turn', turn, 'rating', rating, 'comment', comment, 'thumbs_up', thumbs_up));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.rate_turn(bigint, integer, text, boolean) IS
  'Rate a turn 1..5 and/or thumbs up/down with a comment; one rating per turn and rater (rating again replaces it). Users rate the turns they started, operators any. Returns the rating_id. Audited (turn_rated). Raises 22023, 42704, 42501.';
REVOKE ALL ON FUNCTION pgagent.rate_turn(bigint, integer, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.rate_turn(bigint, integer, text, boolean) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.flag_issue(turn bigint DEFAULT NULL, step bigint DEFAULT NULL, category text DEFAULT 'other', note text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('flag_issue', pg_catalog.jsonb_build_object('turn', turn, 'step', step, 'category', category, 'note', note));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.flag_issue(bigint, bigint, text, text) IS
  'Flag a problem with a turn or one of its steps (category e.g. wrong_answer, unsafe, tool_misuse; a note); open until pgagent.resolve_issue; listed by pgagent.flagged_issues. Users flag the turns they started, operators any. Returns the flag_id. Audited (issue_flagged). Raises 22023, 42704, 42501.';
REVOKE ALL ON FUNCTION pgagent.flag_issue(bigint, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.flag_issue(bigint, bigint, text, text) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.resolve_issue(flag bigint, resolution text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('resolve_issue', pg_catalog.jsonb_build_object('flag', flag, 'resolution', resolution));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.resolve_issue(bigint, text) IS
  'Operator: mark an open flag resolved (who, when, resolution). Returns true, or false if it was already resolved. Audited (issue_resolved). Raises 22023, 42704.';
REVOKE ALL ON FUNCTION pgagent.resolve_issue(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.resolve_issue(bigint, text) TO pgagent_operator;
