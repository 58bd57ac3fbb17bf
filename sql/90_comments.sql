-- Catalog documentation: the schema, and every column of every table and view in schema pgagent
-- (tests/sql/07_catalog.sql fails on a missing one). Runs last, so a COMMENT here wins over an
-- earlier one on the same object; keep both consistent. Units: ms, tokens, USD. Comments on
-- tables and columns belong here, not in 10_tables.sql, which upgrades do not replay.

COMMENT ON SCHEMA pgagent IS
  'pgagent: AI agents that run inside PostgreSQL. Models, personas, tools and agents are configured per tenant; conversations hold turns, and each turn''s steps (LLM calls, tool calls, approvals, results) are an append-only, hash-chained log. Tenant roles read through row level security and write only through the SECURITY DEFINER API functions. See docs/api.md.';

-- ---------------------------------------------------------------------------- tables (defined in 10_tables.sql)
COMMENT ON TABLE pgagent.tenant IS
  'A tenant: the unit of isolation. Every other pgagent row belongs to exactly one tenant. The tenant named ''default'' (all-zero uuid) serves single-tenant use.';
COMMENT ON TABLE pgagent.model IS
  'Provider registry: where and how to call an LLM (provider openai = any OpenAI-compatible chat-completions server; anthropic = Anthropic Messages; gemini = Google Gemini; ollama = Ollama''s native API), the API key''s secret name (never the key), default request parameters, prices in USD per 1M tokens and the context window (tokens).';
COMMENT ON TABLE pgagent.persona IS
  'A reusable personality: system prompt, traits (rendered into the prompt) and request parameters that override the model''s.';
COMMENT ON TABLE pgagent.agent IS
  'An agent: a persona and instructions, a model, a set of tools (agent_tool) and config: max_steps (LLM calls per turn, default 8), auto_approve (true or an array of tool names), max_tool_errors (default 3), history_turns (default 20), params (request parameters).';
COMMENT ON TABLE pgagent.agent_tool IS 'Which tools each agent may call.';
COMMENT ON TABLE pgagent.conversation IS 'A conversation with one agent: an ordered list of turns.';
COMMENT ON TABLE pgagent.turn IS
  'One user message and everything the agent did to answer it. A state machine: queued -> running -> awaiting_approval -> running -> completed | failed | cancelled (enforced by a trigger). Holds the changing state and the totals: llm_calls, prompt_tokens and completion_tokens (tokens), cost_usd (USD).';
COMMENT ON TABLE pgagent.step IS
  'Append-only log of everything that happened in a turn, in order (seq): user_message, llm_call (request summary, reply, finish_reason, usage), thinking, tool_call, approval (who, when, why), tool_result, response, error. Tokens are per step; latency_ms in ms; cost_usd in USD. UPDATE, DELETE and TRUNCATE are refused.';
COMMENT ON TABLE pgagent.tenant_member IS
  'Who may act for a tenant: every role that is a member (pg_has_role MEMBER, so also through group roles) of role_name. Managed with pgagent.add_member; a session sees only its own memberships.';
COMMENT ON TABLE pgagent.secret IS
  'API keys by name (a model''s secret_name), encrypted with pgp_sym_encrypt under the server''s key-encryption key (the file pgagent.kek in the data directory). Set with pgagent.set_secret; the loop decrypts at call time.';
COMMENT ON TABLE pgagent.egress_allow IS
  'Hosts the tenant''s http tools may call: an exact host name or IP literal, or "*.suffix" for every name ending in ".suffix" (not suffix itself). Lower case, no scheme, port or path. Managed by admins with pgagent.allow_egress / pgagent.revoke_egress. Every resolved address must still pass the private-address block (see pgagent.egress_exception).';
COMMENT ON TABLE pgagent.egress_exception IS
  'Networks exempted, for one tenant, from the http tools'' block of loopback, private, link-local and other non-public addresses (internal services; tests use 127.0.0.2/32). Written only by a superuser (no pgagent role has INSERT, UPDATE or DELETE); tenants may read their own rows. Cloud metadata addresses stay refused even inside an exception.';

-- ---------------------------------------------------------------------------- table comments fixed here
COMMENT ON TABLE pgagent.tool IS
  'A tool the model may call: name and description as the model sees them, a JSON Schema for the arguments (validated before every call), the kind that runs it with its config, whether a human must approve each call, and its timeout in ms. Kinds: sql (a read-only query run as pgagent_sandbox and always rolled back; config: query with $1..$n and args naming the arguments that fill them, or no query and the model sends SQL in argument "query"; max_rows (default 100); search_path (default public)); function (calls a SQL function with the arguments by name as the role config.run_as, default pgagent_sandbox; its writes commit with the turn; config: function, optionally schema-qualified; run_as); http (one HTTP(S) request to a host on the tenant''s egress_allow list, private addresses refused unless in egress_exception; config: url with {name} placeholders, or none and the model sends "url"; method (GET default, HEAD, POST, PUT, PATCH, DELETE); headers; body_arg; max_bytes (default 1000000); max_redirects (default 3)).';

COMMENT ON TABLE pgagent.audit_event IS
  'Append-only, hash-chained audit log per tenant of configuration and control actions, written by the API functions. action is <object>_<verb, past tense>, e.g. tenant_added, member_added, member_removed, model_registered, model_updated, model_disabled, model_enabled, model_deleted, tool_registered, persona_created, agent_created (and the same verbs for tool_, persona_ and agent_), secret_set, secret_deleted, egress_allowed, egress_revoked, approval_decided, turn_cancelled, conversation_deleted. Secret values never appear, and using a key for an LLM call is not audited (there are no secret-read events). hash = sha256(prev_hash || canonical event); check with pgagent.verify_audit_chain(tenant). UPDATE, DELETE and TRUNCATE are refused.';

-- ---------------------------------------------------------------------------- tenant
COMMENT ON COLUMN pgagent.tenant.tenant_id IS 'The tenant''s id; the built-in tenant ''default'' is 00000000-0000-0000-0000-000000000000 (pgagent.default_tenant_id()).';
COMMENT ON COLUMN pgagent.tenant.name IS 'Unique short name (lower case, digits, _ . -; at most 63 characters); what SET pgagent.tenant usually names.';
COMMENT ON COLUMN pgagent.tenant.display_name IS 'Free-form human-readable name.';
COMMENT ON COLUMN pgagent.tenant.role_name IS
  'Optional per-tenant role: every member of it (pg_has_role MEMBER) may act for the tenant, like a pgagent.tenant_member row.';
COMMENT ON COLUMN pgagent.tenant.created_at IS 'When the tenant was created (pgagent.add_tenant).';
COMMENT ON COLUMN pgagent.tenant.events_key IS 'Random key (32 hex digits) naming the tenant''s NOTIFY channel, pgagent_events_<key> (pgagent.event_channel); readable by the tenant''s members only. A superuser rotates it with UPDATE; see docs/events.md.';
COMMENT ON COLUMN pgagent.tenant.max_running_turns IS 'At most this many turns of the tenant run at once under workers (pgagent.set_limits; NULL: no limit).';
COMMENT ON COLUMN pgagent.tenant.retention_days IS 'Housekeeping deletes conversations whose turns all finished more than this many days ago, each an audited delete_conversation (pgagent.set_limits; NULL: keep everything).';

-- ---------------------------------------------------------------------------- tenant_member
COMMENT ON COLUMN pgagent.tenant_member.tenant_id IS 'The tenant the role may act for.';
COMMENT ON COLUMN pgagent.tenant_member.role_name IS 'A role whose members (directly or through group roles) may act for the tenant.';
COMMENT ON COLUMN pgagent.tenant_member.added_by IS 'The role that added the membership.';
COMMENT ON COLUMN pgagent.tenant_member.added_at IS 'When the membership was added.';

-- ---------------------------------------------------------------------------- model
COMMENT ON COLUMN pgagent.model.tenant_id IS 'The tenant that owns the model.';
COMMENT ON COLUMN pgagent.model.model_id IS 'Generated id of the model (unique with tenant_id).';
COMMENT ON COLUMN pgagent.model.name IS 'The name agents and pgagent.embed refer to the model by; unique per tenant.';
COMMENT ON COLUMN pgagent.model.kind IS 'chat (used by agents) or embedding (used by pgagent.embed).';
COMMENT ON COLUMN pgagent.model.provider IS 'API protocol: openai (any OpenAI-compatible chat-completions / embeddings server: OpenAI, vLLM, llama.cpp, OpenRouter, Ollama''s /v1), anthropic (Anthropic Messages), gemini (Google Gemini generateContent) or ollama (Ollama''s native /api/chat).';
COMMENT ON COLUMN pgagent.model.base_url IS 'The API''s base URL (http or https), e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1.';
COMMENT ON COLUMN pgagent.model.model_name IS 'The model identifier sent to the provider, e.g. gpt-4o-mini.';
COMMENT ON COLUMN pgagent.model.secret_name IS 'Name of the pgagent.secret holding the API key (never the key itself); NULL for servers that need no key.';
COMMENT ON COLUMN pgagent.model.params IS 'Default request parameters (e.g. {"temperature": 0.2, "max_tokens": 1024}); the persona''s params, the agent''s config.params and the turn''s params override them, in that order.';
COMMENT ON COLUMN pgagent.model.tool_mode IS
  'native: tools are sent as the API''s tools / tool_calls. json_schema: tools are described in the prompt and the reply is constrained by response_format json_schema (a oneOf over tool calls and a final answer) - for small local models.';
COMMENT ON COLUMN pgagent.model.input_usd_per_mtok IS 'Price of prompt (input) tokens in USD per 1,000,000 tokens; used for cost_usd.';
COMMENT ON COLUMN pgagent.model.output_usd_per_mtok IS 'Price of completion (output) tokens in USD per 1,000,000 tokens; used for cost_usd.';
COMMENT ON COLUMN pgagent.model.context_window IS 'The model''s context window in tokens (informational; NULL = unknown).';
COMMENT ON COLUMN pgagent.model.timeout_ms IS 'HTTP timeout of one LLM call, in ms (connect and read).';
COMMENT ON COLUMN pgagent.model.max_retries IS 'Retries of one LLM call after HTTP 429/5xx, timeouts or malformed replies; each failed attempt is a recorded error step.';
COMMENT ON COLUMN pgagent.model.is_default IS 'The tenant''s default model of its kind (at most one per tenant and kind), used when none is named (e.g. by pgagent.embed).';
COMMENT ON COLUMN pgagent.model.enabled IS 'false: the model is disabled and is not called (kept for history and for re-enabling).';
COMMENT ON COLUMN pgagent.model.created_at IS 'When the model was registered.';
COMMENT ON COLUMN pgagent.model.updated_at IS 'When the model was last changed.';

-- ---------------------------------------------------------------------------- persona
COMMENT ON COLUMN pgagent.persona.tenant_id IS 'The tenant that owns the persona.';
COMMENT ON COLUMN pgagent.persona.persona_id IS 'Generated id of the persona (unique with tenant_id).';
COMMENT ON COLUMN pgagent.persona.name IS 'The name agents refer to the persona by; unique per tenant.';
COMMENT ON COLUMN pgagent.persona.system_prompt IS 'The system prompt, placed first in every request of agents with this persona (before traits and the agent''s instructions).';
COMMENT ON COLUMN pgagent.persona.traits IS 'Personality traits as a JSON object, rendered into the system prompt as "Traits: key: value, ...".';
COMMENT ON COLUMN pgagent.persona.params IS 'Request parameters over the model''s params (e.g. {"temperature": 0.9}); the agent''s config.params and the turn''s params override them.';
COMMENT ON COLUMN pgagent.persona.created_at IS 'When the persona was created.';
COMMENT ON COLUMN pgagent.persona.updated_at IS 'When the persona was last changed.';

-- ---------------------------------------------------------------------------- tool
COMMENT ON COLUMN pgagent.tool.tenant_id IS 'The tenant that owns the tool.';
COMMENT ON COLUMN pgagent.tool.tool_id IS 'Generated id of the tool (unique with tenant_id).';
COMMENT ON COLUMN pgagent.tool.name IS 'The function name the model sees and calls (letters, digits, _ and -, at most 64); unique per tenant.';
COMMENT ON COLUMN pgagent.tool.description IS 'What the tool does, as shown to the model.';
COMMENT ON COLUMN pgagent.tool.parameters IS 'JSON Schema (an object schema) of the arguments, shown to the model and checked before every call; an invalid call is recorded and answered with an error result.';
COMMENT ON COLUMN pgagent.tool.kind IS 'What runs the tool: sql, function or http (see the table comment for each kind''s config).';
COMMENT ON COLUMN pgagent.tool.config IS 'The kind''s settings as a JSON object: sql {query, args, max_rows, search_path}; function {function, run_as}; http {url, method, headers, body_arg, max_bytes, max_redirects}. Checked by pgagent.register_tool.';
COMMENT ON COLUMN pgagent.tool.requires_approval IS 'true: each call waits (turn status awaiting_approval) for pgagent.approve_step unless the agent''s config.auto_approve covers the tool.';
COMMENT ON COLUMN pgagent.tool.timeout_ms IS 'Time limit of one call in ms (1 to 600000); an sql or function call is cancelled, an http call is cut off, at the deadline.';
COMMENT ON COLUMN pgagent.tool.enabled IS 'false: the tool is disabled: not offered to the model and its calls are refused (kept for history and for re-enabling).';
COMMENT ON COLUMN pgagent.tool.created_at IS 'When the tool was registered.';
COMMENT ON COLUMN pgagent.tool.updated_at IS 'When the tool was last changed.';

-- ---------------------------------------------------------------------------- agent
COMMENT ON COLUMN pgagent.agent.tenant_id IS 'The tenant that owns the agent.';
COMMENT ON COLUMN pgagent.agent.agent_id IS 'Generated id of the agent (unique with tenant_id).';
COMMENT ON COLUMN pgagent.agent.name IS 'The name conversations are started with (pgagent.start_conversation); unique per tenant.';
COMMENT ON COLUMN pgagent.agent.persona_id IS 'The persona (system prompt, traits, params); NULL for none.';
COMMENT ON COLUMN pgagent.agent.model_id IS 'The chat model the agent calls.';
COMMENT ON COLUMN pgagent.agent.instructions IS 'Agent-specific instructions appended to the persona''s system prompt.';
COMMENT ON COLUMN pgagent.agent.config IS 'Loop settings: max_steps (LLM calls per turn, default 8), auto_approve (true or an array of tool names; default false), max_tool_errors (invalid tool calls per turn, default 3), history_turns (earlier turns sent as context, default 20), params (request parameters over the model''s and persona''s).';
COMMENT ON COLUMN pgagent.agent.enabled IS 'false: the agent is disabled and takes no new messages (its conversations stay readable).';
COMMENT ON COLUMN pgagent.agent.created_at IS 'When the agent was created.';
COMMENT ON COLUMN pgagent.agent.updated_at IS 'When the agent was last changed.';

-- ---------------------------------------------------------------------------- agent_tool
COMMENT ON COLUMN pgagent.agent_tool.tenant_id IS 'The tenant of both the agent and the tool.';
COMMENT ON COLUMN pgagent.agent_tool.agent_id IS 'The agent that may call the tool.';
COMMENT ON COLUMN pgagent.agent_tool.tool_id IS 'The tool the agent may call.';

-- ---------------------------------------------------------------------------- conversation
COMMENT ON COLUMN pgagent.conversation.tenant_id IS 'The tenant that owns the conversation.';
COMMENT ON COLUMN pgagent.conversation.conversation_id IS 'Generated id of the conversation (unique with tenant_id).';
COMMENT ON COLUMN pgagent.conversation.agent_id IS 'The agent this conversation talks to.';
COMMENT ON COLUMN pgagent.conversation.title IS 'Optional free-form title.';
COMMENT ON COLUMN pgagent.conversation.metadata IS 'Application-defined JSON object; pgagent does not interpret it.';
COMMENT ON COLUMN pgagent.conversation.paused_at IS 'When pgagent.pause_conversation paused it (NULL: not paused). While paused, no LLM call or tool call starts in the conversation.';
COMMENT ON COLUMN pgagent.conversation.paused_by IS 'The role that paused the conversation (NULL when not paused).';
COMMENT ON COLUMN pgagent.conversation.pause_reason IS 'Why it was paused (pause_conversation''s reason).';
COMMENT ON COLUMN pgagent.conversation.forked_from IS 'pgagent.fork_conversation: the conversation this one was forked from (NULL otherwise).';
COMMENT ON COLUMN pgagent.conversation.forked_at_step IS 'pgagent.fork_conversation: the step of forked_from up to which the history was copied.';
COMMENT ON COLUMN pgagent.conversation.user_id IS 'The application''s end-user id (1 to 256 characters), for applications whose users share one database role; NULL when not given. pgagent records it and does not interpret it (it is not a database role).';
COMMENT ON COLUMN pgagent.conversation.created_by IS 'The database role that started the conversation: the role the session acted as (SET ROLE''s role, else session_user), not the API function''s owner.';
COMMENT ON COLUMN pgagent.conversation.created_at IS 'When the conversation was started.';

-- ---------------------------------------------------------------------------- turn
COMMENT ON COLUMN pgagent.turn.tenant_id IS 'The tenant that owns the turn.';
COMMENT ON COLUMN pgagent.turn.turn_id IS 'Generated id of the turn (unique with tenant_id).';
COMMENT ON COLUMN pgagent.turn.conversation_id IS 'The conversation the turn belongs to.';
COMMENT ON COLUMN pgagent.turn.seq IS 'Position of the turn in its conversation (1, 2, ...).';
COMMENT ON COLUMN pgagent.turn.status IS 'queued, running, awaiting_approval (a tool call waits for pgagent.approve_step), paused (its conversation is paused: pgagent.resume_conversation queues it again), completed, failed (pgagent.retry_turn queues it again) or cancelled; changes only along the state machine (trigger).';
COMMENT ON COLUMN pgagent.turn.user_message IS 'The user''s message that started the turn.';
COMMENT ON COLUMN pgagent.turn.params IS 'Request parameters for this turn only (e.g. {"temperature": 0}), over the model''s, persona''s and agent''s.';
COMMENT ON COLUMN pgagent.turn.answer IS 'The agent''s final answer; set when completed.';
COMMENT ON COLUMN pgagent.turn.error IS 'Why the turn failed, or the cancel reason; set when failed or cancelled.';
COMMENT ON COLUMN pgagent.turn.llm_calls IS 'Number of LLM calls made for the turn so far.';
COMMENT ON COLUMN pgagent.turn.prompt_tokens IS 'Prompt (input) tokens of all the turn''s LLM calls, in tokens.';
COMMENT ON COLUMN pgagent.turn.completion_tokens IS 'Completion (output) tokens of all the turn''s LLM calls, in tokens.';
COMMENT ON COLUMN pgagent.turn.cost_usd IS 'Cost of all the turn''s LLM calls in USD (tokens times the model''s prices per 1M tokens).';
COMMENT ON COLUMN pgagent.turn.created_by IS 'The database role that sent the message: the role the session acted as (SET ROLE''s role, else session_user), not the API function''s owner.';
COMMENT ON COLUMN pgagent.turn.created_at IS 'When the turn was created (queued).';
COMMENT ON COLUMN pgagent.turn.started_at IS 'When the turn first started running; NULL while queued.';
COMMENT ON COLUMN pgagent.turn.finished_at IS 'When the turn ended (completed, failed or cancelled); NULL while open.';
COMMENT ON COLUMN pgagent.turn.updated_at IS 'When the turn''s status or totals last changed.';
COMMENT ON COLUMN pgagent.turn.lease_owner IS 'The worker (pgagent.claim_turn; its id, or backend:<pid> for a plain CALL run_turn that took over) that runs or last ran the turn; NULL for turns no worker touched.';
COMMENT ON COLUMN pgagent.turn.lease_expires_at IS 'Until when the lease holds (renewed after every step). Past: a worker may claim the turn again; infinity: parked, waiting for an approval.';
COMMENT ON COLUMN pgagent.turn.run_after IS 'A deferred retry (after a failed LLM attempt under a worker): no worker claims the turn before this time.';
COMMENT ON COLUMN pgagent.turn.parent_turn_id IS 'Agent tools: the turn whose agent tool call started this child turn (NULL for a turn a user started). Workers never claim a child turn; whoever runs its root runs it (docs/multi-agent.md).';
COMMENT ON COLUMN pgagent.turn.parent_step_id IS 'Agent tools: the tool_call step of the parent turn this child turn answers (one child per call).';
COMMENT ON COLUMN pgagent.turn.depth IS 'Agent tools: how deep the chain of agent calls is at this turn (0 for a root turn; at most the agent tool''s max_depth).';

-- ---------------------------------------------------------------------------- step
COMMENT ON COLUMN pgagent.step.tenant_id IS 'The tenant that owns the step.';
COMMENT ON COLUMN pgagent.step.step_id IS 'Generated id of the step (unique with tenant_id); what approve_step and process_tool_call take.';
COMMENT ON COLUMN pgagent.step.turn_id IS 'The turn the step belongs to.';
COMMENT ON COLUMN pgagent.step.seq IS 'Position of the step in its turn (1, 2, ...).';
COMMENT ON COLUMN pgagent.step.kind IS 'user_message, llm_call, thinking, tool_call, approval, tool_result, response, error, intervention (an operator acted on the turn: injected a message, paused, resumed, retried, overrode the answer), guardrail (a policy hook denied or rewrote something) or compaction (the prompt was cut to fit the model''s context window: docs/memory.md#context-compaction).';
COMMENT ON COLUMN pgagent.step.payload IS 'What happened, by kind: user_message/thinking/response {content}; llm_call {message, finish_reason, model, provider, tool_mode, tool_call_source, prompt_chars, memories?, memory_error?}; tool_call {arguments (JSON null when invalid), raw_arguments, source, requires_approval, invalid}; approval {approved, note, decided_by, session_user, decided_at}; tool_result {is_error, result | error, ...}; error {message, error_kind, ...}; intervention {action: inject_message {intervention_id, role, content, injected_by} | pause {paused_by, reason} | resume {resumed_by} | retry {previous_error, by} | override_response {content, original, reason, by}}; guardrail {event, hook, action: deny | rewrite, reason}; compaction {stage: tool_outputs {dropped} | summary {summary, through_seq, turns} , tokens_before, tokens_after, limit, error?}.';
COMMENT ON COLUMN pgagent.step.parent_step_id IS 'For tool_result and approval: the tool_call step they answer (same turn; at most one of each per call).';
COMMENT ON COLUMN pgagent.step.tool_call_id IS 'The provider''s tool call id (OpenAI tool_calls[].id, Anthropic tool_use.id), or one pgagent made for calls recovered from text.';
COMMENT ON COLUMN pgagent.step.tool_name IS 'For tool_call and tool_result: the tool''s name as the model called it.';
COMMENT ON COLUMN pgagent.step.prompt_tokens IS 'For llm_call: prompt (input) tokens of this call, in tokens; NULL otherwise.';
COMMENT ON COLUMN pgagent.step.completion_tokens IS 'For llm_call: completion (output) tokens of this call, in tokens; NULL otherwise.';
COMMENT ON COLUMN pgagent.step.cost_usd IS 'For llm_call: cost of this call in USD; NULL otherwise.';
COMMENT ON COLUMN pgagent.step.latency_ms IS 'For llm_call and tool_result: how long the LLM call or the tool run took, in ms; NULL otherwise.';
COMMENT ON COLUMN pgagent.step.created_by IS 'The database role the step was recorded for: the role the session acted as (SET ROLE''s role, else session_user), not the API function''s owner. For an approval the decider.';
COMMENT ON COLUMN pgagent.step.created_at IS 'When the step was recorded (clock_timestamp).';
COMMENT ON COLUMN pgagent.step.prev_hash IS 'The hash of the previous step (seq - 1) of the same turn; NULL for the first step.';
COMMENT ON COLUMN pgagent.step.hash IS 'sha256(prev_hash || the step''s fields in canonical form): the turn''s steps form a hash chain, checked by pgagent.verify_turn(turn).';

-- ---------------------------------------------------------------------------- audit_event
COMMENT ON COLUMN pgagent.audit_event.tenant_id IS 'The tenant whose chain the event belongs to.';
COMMENT ON COLUMN pgagent.audit_event.event_id IS 'Generated id of the event (unique with tenant_id).';
COMMENT ON COLUMN pgagent.audit_event.chain_seq IS 'Position in the tenant''s chain (1, 2, ...), assigned under a per-tenant lock.';
COMMENT ON COLUMN pgagent.audit_event.at IS 'When the event was recorded (clock_timestamp, set by the chain trigger).';
COMMENT ON COLUMN pgagent.audit_event.actor IS 'The database role that performed the action (the role the session acted as: SET ROLE''s role, else session_user).';
COMMENT ON COLUMN pgagent.audit_event.action IS 'What was done, named <object>_<verb, past tense>: e.g. model_registered, tool_registered, agent_created, secret_set, approval_decided, turn_cancelled, egress_allowed, tenant_added (see the table comment).';
COMMENT ON COLUMN pgagent.audit_event.object_type IS 'The kind of object acted on, usually its table name: tenant, tenant_member, model, persona, tool, agent, secret, conversation, turn, step, egress_allow.';
COMMENT ON COLUMN pgagent.audit_event.object_id IS 'The object''s id as text (e.g. model_id, step_id, turn_id), or its name for tenants, members, secrets and egress hosts.';
COMMENT ON COLUMN pgagent.audit_event.payload IS 'Details of the action as a JSON object (e.g. the registered config, approved and note, a cancel reason); never a secret value.';
COMMENT ON COLUMN pgagent.audit_event.prev_hash IS 'The hash of the previous event in the tenant''s chain; NULL for the first.';
COMMENT ON COLUMN pgagent.audit_event.hash IS 'sha256(prev_hash || the event''s fields as a canonical JSON array); checked by pgagent.verify_audit_chain.';

-- ---------------------------------------------------------------------------- secret
COMMENT ON COLUMN pgagent.secret.tenant_id IS 'The tenant that owns the secret.';
COMMENT ON COLUMN pgagent.secret.name IS 'The name models refer to (model.secret_name); unique per tenant.';
COMMENT ON COLUMN pgagent.secret.ciphertext IS 'The value encrypted with pgp_sym_encrypt (aes256) under the key-encryption key in $PGDATA/pgagent.kek; no tenant role may read this column.';
COMMENT ON COLUMN pgagent.secret.created_by IS 'The role that last set the secret.';
COMMENT ON COLUMN pgagent.secret.created_at IS 'When the secret was first set.';
COMMENT ON COLUMN pgagent.secret.updated_at IS 'When the secret''s value was last set.';

-- ---------------------------------------------------------------------------- egress_allow
COMMENT ON COLUMN pgagent.egress_allow.tenant_id IS 'The tenant whose http tools may call the host.';
COMMENT ON COLUMN pgagent.egress_allow.host IS
  'An exact host ("api.example.com", "203.0.113.7", "2001:db8::1") or a wildcard "*.example.com"; lower case, no scheme or port.';
COMMENT ON COLUMN pgagent.egress_allow.added_by IS 'The role that allowed the host.';
COMMENT ON COLUMN pgagent.egress_allow.added_at IS 'When the host was allowed.';

-- ---------------------------------------------------------------------------- egress_exception
COMMENT ON COLUMN pgagent.egress_exception.tenant_id IS 'The tenant whose http tools may reach the network.';
COMMENT ON COLUMN pgagent.egress_exception.network IS 'The exempted network, e.g. 10.1.2.0/24 or 127.0.0.2/32.';
COMMENT ON COLUMN pgagent.egress_exception.note IS 'Why the exception exists (free text).';
COMMENT ON COLUMN pgagent.egress_exception.added_by IS 'The superuser who added the exception.';
COMMENT ON COLUMN pgagent.egress_exception.added_at IS 'When the exception was added.';

-- ---------------------------------------------------------------------------- view turn_timeline
COMMENT ON COLUMN pgagent.turn_timeline.tenant_id IS 'The tenant of the step.';
COMMENT ON COLUMN pgagent.turn_timeline.conversation_id IS 'The conversation of the turn.';
COMMENT ON COLUMN pgagent.turn_timeline.agent IS 'The agent''s name.';
COMMENT ON COLUMN pgagent.turn_timeline.turn_id IS 'The turn the step belongs to.';
COMMENT ON COLUMN pgagent.turn_timeline.turn_seq IS 'The turn''s position in its conversation.';
COMMENT ON COLUMN pgagent.turn_timeline.turn_status IS 'The turn''s current status.';
COMMENT ON COLUMN pgagent.turn_timeline.step_id IS 'The step''s id.';
COMMENT ON COLUMN pgagent.turn_timeline.seq IS 'The step''s position in its turn.';
COMMENT ON COLUMN pgagent.turn_timeline.kind IS 'The step''s kind (user_message, llm_call, thinking, tool_call, approval, tool_result, response, error).';
COMMENT ON COLUMN pgagent.turn_timeline.tool_name IS 'For tool_call and tool_result: the tool''s name.';
COMMENT ON COLUMN pgagent.turn_timeline.tool_call_id IS 'For tool_call and tool_result: the provider''s tool call id.';
COMMENT ON COLUMN pgagent.turn_timeline.parent_step_id IS 'For tool_result and approval: the tool_call step they answer.';
COMMENT ON COLUMN pgagent.turn_timeline.summary IS 'One line: the message or answer text, the tool calls an LLM call asked for, a call''s arguments (or "invalid: <problem> (raw: <text the model sent>)"), "approved|rejected by <role>: <note>", a result or "error: <message>".';
COMMENT ON COLUMN pgagent.turn_timeline.prompt_tokens IS 'For llm_call: prompt (input) tokens, in tokens.';
COMMENT ON COLUMN pgagent.turn_timeline.completion_tokens IS 'For llm_call: completion (output) tokens, in tokens.';
COMMENT ON COLUMN pgagent.turn_timeline.cost_usd IS 'For llm_call: cost in USD.';
COMMENT ON COLUMN pgagent.turn_timeline.latency_ms IS 'For llm_call and tool_result: duration in ms.';
COMMENT ON COLUMN pgagent.turn_timeline.at_ms IS 'When the step was recorded, in ms since the turn was created.';
COMMENT ON COLUMN pgagent.turn_timeline.created_by IS 'The role the step was recorded for (see step.created_by).';
COMMENT ON COLUMN pgagent.turn_timeline.created_at IS 'When the step was recorded.';
COMMENT ON COLUMN pgagent.turn_timeline.payload IS 'The step''s full payload (see step.payload).';
COMMENT ON COLUMN pgagent.turn_timeline.user_id IS 'The conversation''s application end-user id (conversation.user_id).';
COMMENT ON COLUMN pgagent.turn_timeline.parent_turn_id IS 'Agent tools: the turn whose agent tool call started this turn (NULL for a root turn); pgagent.turn_tree(turn_id) shows the whole tree.';
COMMENT ON COLUMN pgagent.turn_timeline.depth IS 'Agent tools: the turn''s depth in its tree (0 for a root turn).';

-- ---------------------------------------------------------------------------- view pending_approvals
COMMENT ON COLUMN pgagent.pending_approvals.tenant_id IS 'The tenant of the tool call.';
COMMENT ON COLUMN pgagent.pending_approvals.step_id IS 'The tool_call step to pass to pgagent.approve_step.';
COMMENT ON COLUMN pgagent.pending_approvals.turn_id IS 'The waiting turn (status awaiting_approval).';
COMMENT ON COLUMN pgagent.pending_approvals.conversation_id IS 'The conversation of the turn.';
COMMENT ON COLUMN pgagent.pending_approvals.agent IS 'The agent''s name.';
COMMENT ON COLUMN pgagent.pending_approvals.tool_name IS 'The tool the model wants to call.';
COMMENT ON COLUMN pgagent.pending_approvals.arguments IS 'The validated arguments of the call.';
COMMENT ON COLUMN pgagent.pending_approvals.user_message IS 'The user message of the turn, for context.';
COMMENT ON COLUMN pgagent.pending_approvals.created_at IS 'When the call was recorded; the view is ordered by it (then step_id).';
COMMENT ON COLUMN pgagent.pending_approvals.waiting_s IS 'How long the call has waited, in seconds.';
COMMENT ON COLUMN pgagent.pending_approvals.user_id IS 'The conversation''s application end-user id (conversation.user_id).';

-- ---------------------------------------------------------------------------- view turn_summary
COMMENT ON COLUMN pgagent.turn_summary.tenant_id IS 'The tenant of the turn.';
COMMENT ON COLUMN pgagent.turn_summary.turn_id IS 'The turn''s id.';
COMMENT ON COLUMN pgagent.turn_summary.conversation_id IS 'The conversation of the turn.';
COMMENT ON COLUMN pgagent.turn_summary.agent IS 'The agent''s name.';
COMMENT ON COLUMN pgagent.turn_summary.seq IS 'The turn''s position in its conversation.';
COMMENT ON COLUMN pgagent.turn_summary.status IS 'The turn''s status.';
COMMENT ON COLUMN pgagent.turn_summary.user_message IS 'The user''s message.';
COMMENT ON COLUMN pgagent.turn_summary.answer IS 'The final answer (completed turns).';
COMMENT ON COLUMN pgagent.turn_summary.error IS 'The error or cancel reason (failed or cancelled turns).';
COMMENT ON COLUMN pgagent.turn_summary.steps IS 'Number of steps recorded for the turn.';
COMMENT ON COLUMN pgagent.turn_summary.llm_calls IS 'Number of LLM calls.';
COMMENT ON COLUMN pgagent.turn_summary.prompt_tokens IS 'Prompt (input) tokens of all LLM calls, in tokens.';
COMMENT ON COLUMN pgagent.turn_summary.completion_tokens IS 'Completion (output) tokens of all LLM calls, in tokens.';
COMMENT ON COLUMN pgagent.turn_summary.cost_usd IS 'Cost of all LLM calls in USD.';
COMMENT ON COLUMN pgagent.turn_summary.duration_ms IS 'From creation to finish in ms (to now for open turns).';
COMMENT ON COLUMN pgagent.turn_summary.created_by IS 'The role that sent the message (see turn.created_by).';
COMMENT ON COLUMN pgagent.turn_summary.created_at IS 'When the turn was created.';
COMMENT ON COLUMN pgagent.turn_summary.started_at IS 'When the turn started running.';
COMMENT ON COLUMN pgagent.turn_summary.finished_at IS 'When the turn ended.';
COMMENT ON COLUMN pgagent.turn_summary.user_id IS 'The conversation''s application end-user id (conversation.user_id).';

-- ---------------------------------------------------------------------------- view agent_stats
COMMENT ON COLUMN pgagent.agent_stats.tenant_id IS 'The tenant of the agent.';
COMMENT ON COLUMN pgagent.agent_stats.agent_id IS 'The agent''s id.';
COMMENT ON COLUMN pgagent.agent_stats.agent IS 'The agent''s name.';
COMMENT ON COLUMN pgagent.agent_stats.model IS 'The name of the agent''s model.';
COMMENT ON COLUMN pgagent.agent_stats.turns IS 'Number of turns in all the agent''s conversations.';
COMMENT ON COLUMN pgagent.agent_stats.completed IS 'Turns with status completed.';
COMMENT ON COLUMN pgagent.agent_stats.failed IS 'Turns with status failed.';
COMMENT ON COLUMN pgagent.agent_stats.awaiting_approval IS 'Turns with status awaiting_approval.';
COMMENT ON COLUMN pgagent.agent_stats.llm_calls IS 'LLM calls of all turns.';
COMMENT ON COLUMN pgagent.agent_stats.prompt_tokens IS 'Prompt (input) tokens of all turns, in tokens.';
COMMENT ON COLUMN pgagent.agent_stats.completion_tokens IS 'Completion (output) tokens of all turns, in tokens.';
COMMENT ON COLUMN pgagent.agent_stats.cost_usd IS 'Cost of all turns in USD.';
COMMENT ON COLUMN pgagent.agent_stats.avg_turn_ms IS 'Average duration of finished turns (created to finished), in ms; NULL if none finished.';
COMMENT ON COLUMN pgagent.agent_stats.cancelled IS 'Turns with status cancelled.';
COMMENT ON COLUMN pgagent.agent_stats.running IS 'Turns with status running.';
COMMENT ON COLUMN pgagent.agent_stats.queued IS 'Turns with status queued.';
COMMENT ON COLUMN pgagent.agent_stats.enabled IS 'Whether the agent is enabled (agent.enabled).';

-- ---------------------------------------------------------------------------- operating (0.2.0)
COMMENT ON TABLE pgagent.intervention IS
  'Append-only log of what operators did to conversations and turns (pgagent.inject_message, override_response, pause_conversation, resume_conversation, retry_turn, fork_conversation, bulk_approve). An intervention that acts on a turn is also an intervention step of that turn. UPDATE, DELETE and TRUNCATE are refused (only pgagent.delete_conversation removes a conversation''s).';
COMMENT ON COLUMN pgagent.intervention.tenant_id IS 'The tenant of the conversation.';
COMMENT ON COLUMN pgagent.intervention.intervention_id IS 'Generated id; injected messages reach the model in this order.';
COMMENT ON COLUMN pgagent.intervention.conversation_id IS 'The conversation acted on.';
COMMENT ON COLUMN pgagent.intervention.turn_id IS 'The turn acted on (override_response, retry), else NULL.';
COMMENT ON COLUMN pgagent.intervention.action IS 'inject_message, override_response, pause, resume, retry, fork or bulk_approve.';
COMMENT ON COLUMN pgagent.intervention.payload IS 'By action: inject_message {role, content}; override_response {reason, chars}; pause {reason, paused_turns}; resume {requeued_turns}; retry {previous_error}; fork {new_conversation_id, at_step, agent_id}.';
COMMENT ON COLUMN pgagent.intervention.created_by IS 'The role that acted (SET ROLE''s role, else session_user).';
COMMENT ON COLUMN pgagent.intervention.created_at IS 'When (clock time).';

COMMENT ON TABLE pgagent.rating IS 'Ratings of turns (pgagent.rate_turn): one per turn and rater; rating again replaces it.';
COMMENT ON COLUMN pgagent.rating.tenant_id IS 'The tenant of the turn.';
COMMENT ON COLUMN pgagent.rating.rating_id IS 'Generated id.';
COMMENT ON COLUMN pgagent.rating.turn_id IS 'The rated turn.';
COMMENT ON COLUMN pgagent.rating.rated_by IS 'The role that rated.';
COMMENT ON COLUMN pgagent.rating.rating IS 'Stars, 1 (bad) to 5 (good), or NULL when only thumbs_up was given.';
COMMENT ON COLUMN pgagent.rating.thumbs_up IS 'true (up), false (down) or NULL.';
COMMENT ON COLUMN pgagent.rating.comment IS 'Optional comment (at most 10000 characters).';
COMMENT ON COLUMN pgagent.rating.created_at IS 'When first rated.';
COMMENT ON COLUMN pgagent.rating.updated_at IS 'When last rated.';

COMMENT ON TABLE pgagent.flag IS 'Problems flagged in turns or steps (pgagent.flag_issue), open until pgagent.resolve_issue; see the flagged_issues view.';
COMMENT ON COLUMN pgagent.flag.tenant_id IS 'The tenant of the turn.';
COMMENT ON COLUMN pgagent.flag.flag_id IS 'Generated id.';
COMMENT ON COLUMN pgagent.flag.turn_id IS 'The flagged turn.';
COMMENT ON COLUMN pgagent.flag.step_id IS 'The flagged step, or NULL for the whole turn.';
COMMENT ON COLUMN pgagent.flag.category IS 'What kind of problem, e.g. wrong_answer, unsafe, tool_misuse, slow (^[a-z][a-z0-9_]{0,62}$).';
COMMENT ON COLUMN pgagent.flag.note IS 'Free text from whoever flagged it.';
COMMENT ON COLUMN pgagent.flag.status IS 'open or resolved.';
COMMENT ON COLUMN pgagent.flag.created_by IS 'The role that flagged it.';
COMMENT ON COLUMN pgagent.flag.created_at IS 'When it was flagged.';
COMMENT ON COLUMN pgagent.flag.resolved_by IS 'The operator that resolved it (NULL while open).';
COMMENT ON COLUMN pgagent.flag.resolved_at IS 'When it was resolved (NULL while open).';
COMMENT ON COLUMN pgagent.flag.resolution IS 'How it was resolved.';

COMMENT ON TABLE pgagent.budget IS 'Spending limits (pgagent.set_budget) per tenant, agent or role and day or month (UTC), enforced before every LLM call; see budget_status and docs/guardrails.md.';
COMMENT ON COLUMN pgagent.budget.tenant_id IS 'The tenant the budget belongs to.';
COMMENT ON COLUMN pgagent.budget.budget_id IS 'Generated id.';
COMMENT ON COLUMN pgagent.budget.scope IS 'tenant (every turn of the tenant), agent (turns of agent_id) or role (turns started by role_name).';
COMMENT ON COLUMN pgagent.budget.agent_id IS 'scope agent: the agent; NULL otherwise.';
COMMENT ON COLUMN pgagent.budget.role_name IS 'scope role: the role whose turns count; NULL otherwise.';
COMMENT ON COLUMN pgagent.budget.period IS 'day or month (UTC calendar periods).';
COMMENT ON COLUMN pgagent.budget.max_usd IS 'Most USD per period (NULL: no cost limit).';
COMMENT ON COLUMN pgagent.budget.max_tokens IS 'Most tokens (prompt + completion) per period (NULL: no token limit).';
COMMENT ON COLUMN pgagent.budget.max_turns IS 'Most turns that make an LLM call per period (NULL: no turn limit).';
COMMENT ON COLUMN pgagent.budget.created_by IS 'The admin that set it.';
COMMENT ON COLUMN pgagent.budget.created_at IS 'When it was first set.';
COMMENT ON COLUMN pgagent.budget.updated_at IS 'When it was last set.';

COMMENT ON TABLE pgagent.budget_usage IS 'What each budget''s period has spent: committed LLM calls (USD, tokens) and the turns that made them. Written by the loop only.';
COMMENT ON COLUMN pgagent.budget_usage.tenant_id IS 'The budget''s tenant.';
COMMENT ON COLUMN pgagent.budget_usage.budget_id IS 'The budget.';
COMMENT ON COLUMN pgagent.budget_usage.period_start IS 'Start of the period (UTC day or month).';
COMMENT ON COLUMN pgagent.budget_usage.spent_usd IS 'USD spent in the period.';
COMMENT ON COLUMN pgagent.budget_usage.spent_tokens IS 'Tokens (prompt + completion) spent in the period.';
COMMENT ON COLUMN pgagent.budget_usage.turns IS 'Turns that made an LLM call in the period.';
COMMENT ON COLUMN pgagent.budget_usage.updated_at IS 'When it last changed.';

COMMENT ON TABLE pgagent.budget_hold IS 'Reservations for LLM calls in flight: made before a call, replaced by its real usage when its llm_call step is recorded; a terminal turn''s holds do not count.';
COMMENT ON COLUMN pgagent.budget_hold.tenant_id IS 'The budget''s tenant.';
COMMENT ON COLUMN pgagent.budget_hold.budget_id IS 'The budget.';
COMMENT ON COLUMN pgagent.budget_hold.period_start IS 'The period reserved in.';
COMMENT ON COLUMN pgagent.budget_hold.turn_id IS 'The turn whose next LLM call the hold is for.';
COMMENT ON COLUMN pgagent.budget_hold.usd IS 'USD reserved (an estimate).';
COMMENT ON COLUMN pgagent.budget_hold.tokens IS 'Tokens reserved (an estimate).';
COMMENT ON COLUMN pgagent.budget_hold.turns IS '1 when the call is the turn''s first, else 0.';
COMMENT ON COLUMN pgagent.budget_hold.created_at IS 'When the reservation was made.';

COMMENT ON TABLE pgagent.hook IS 'Policy hooks (pgagent.add_hook): SQL functions the loop calls before an LLM call, before a tool call or after a response, which allow, deny or rewrite; see docs/guardrails.md.';
COMMENT ON COLUMN pgagent.hook.tenant_id IS 'The tenant the hook belongs to.';
COMMENT ON COLUMN pgagent.hook.hook_id IS 'Generated id.';
COMMENT ON COLUMN pgagent.hook.event IS 'before_llm_call, before_tool_call or after_response.';
COMMENT ON COLUMN pgagent.hook.fn IS 'The function (payload jsonb) RETURNS jsonb.';
COMMENT ON COLUMN pgagent.hook.agent_id IS 'The agent whose turns it applies to; NULL: every agent of the tenant.';
COMMENT ON COLUMN pgagent.hook.run_as IS 'The role the function runs as (default pgagent_sandbox), never the extension owner.';
COMMENT ON COLUMN pgagent.hook.priority IS 'Order: lower first (then hook_id).';
COMMENT ON COLUMN pgagent.hook.enabled IS 'false: the hook is skipped.';
COMMENT ON COLUMN pgagent.hook.created_by IS 'The admin that added it.';
COMMENT ON COLUMN pgagent.hook.created_at IS 'When it was added.';
COMMENT ON TABLE pgagent.agent_daily IS 'Totals of the final (completed, failed, cancelled) turns per agent and UTC day of their created_at, kept by the trigger turn_rollup (a turn that becomes final is added at the commit of that transaction); agent_stats adds the turns not final yet. Written by the trigger only.';
COMMENT ON COLUMN pgagent.agent_daily.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.agent_daily.agent_id IS 'The agent of the turns'' conversations.';
COMMENT ON COLUMN pgagent.agent_daily.day IS 'UTC day the turns were created.';
COMMENT ON COLUMN pgagent.agent_daily.completed IS 'Completed turns.';
COMMENT ON COLUMN pgagent.agent_daily.failed IS 'Failed turns.';
COMMENT ON COLUMN pgagent.agent_daily.cancelled IS 'Cancelled turns.';
COMMENT ON COLUMN pgagent.agent_daily.llm_calls IS 'Their LLM calls.';
COMMENT ON COLUMN pgagent.agent_daily.prompt_tokens IS 'Their prompt tokens.';
COMMENT ON COLUMN pgagent.agent_daily.completion_tokens IS 'Their completion tokens.';
COMMENT ON COLUMN pgagent.agent_daily.cost_usd IS 'Their cost (USD).';
COMMENT ON COLUMN pgagent.agent_daily.timed IS 'Of them, the turns with a finished_at.';
COMMENT ON COLUMN pgagent.agent_daily.timed_ms IS 'Sum of those turns'' durations, created_at to finished_at (ms).';

-- ---------------------------------------------------------------------------- workers, schedules, on_insert (issue 9)
COMMENT ON TABLE pgagent.worker IS 'The pgagent worker processes, one row per tenant each has claimed turns of (pgagent.claim_turn); see the workers view.';
COMMENT ON COLUMN pgagent.worker.tenant_id IS 'The tenant it claimed turns of.';
COMMENT ON COLUMN pgagent.worker.worker_id IS 'The worker''s id (host:pid:random by default): the lease_owner of the turns it runs.';
COMMENT ON COLUMN pgagent.worker.role_name IS 'The role it connects as (only that role may beat its heart or stop it).';
COMMENT ON COLUMN pgagent.worker.host IS 'The host it runs on, as it says.';
COMMENT ON COLUMN pgagent.worker.pid IS 'Its process id on that host.';
COMMENT ON COLUMN pgagent.worker.concurrency IS 'Turns it runs at once at most.';
COMMENT ON COLUMN pgagent.worker.started_at IS 'When it first claimed a turn of the tenant.';
COMMENT ON COLUMN pgagent.worker.heartbeat_at IS 'Its last heartbeat (pgagent.worker_heartbeat) or claim.';
COMMENT ON COLUMN pgagent.worker.stopping IS 'Asked to stop: its CALLs of run_turn release their turns after the step in flight.';
COMMENT ON COLUMN pgagent.worker.stopped_at IS 'When it exited (pgagent.worker_exit) or housekeeping found it silent.';
COMMENT ON TABLE pgagent.schedule IS 'Cron schedules (pgagent.schedule): at each due time a worker enqueues the message as a new conversation''s turn of the agent.';
COMMENT ON COLUMN pgagent.schedule.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.schedule.schedule_id IS 'Identity.';
COMMENT ON COLUMN pgagent.schedule.name IS 'Unique per tenant; pgagent.unschedule(name) removes it.';
COMMENT ON COLUMN pgagent.schedule.agent_id IS 'The agent that answers.';
COMMENT ON COLUMN pgagent.schedule.cron IS 'A 5-field cron expression or @hourly, @daily, @weekly, @monthly, @yearly.';
COMMENT ON COLUMN pgagent.schedule.timezone IS 'The IANA time zone the expression is read in.';
COMMENT ON COLUMN pgagent.schedule.message IS 'The user message of each turn it makes.';
COMMENT ON COLUMN pgagent.schedule.params IS 'Request params of each turn it makes.';
COMMENT ON COLUMN pgagent.schedule.enabled IS 'Whether it fires.';
COMMENT ON COLUMN pgagent.schedule.next_fire_at IS 'Its next due time.';
COMMENT ON COLUMN pgagent.schedule.created_by IS 'The role that set it: the turns it makes are created by this role.';
COMMENT ON COLUMN pgagent.schedule.created_at IS 'When it was set.';
COMMENT ON TABLE pgagent.schedule_firing IS 'Each due time a schedule fired, once (the primary key), with the turn it enqueued.';
COMMENT ON COLUMN pgagent.schedule_firing.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.schedule_firing.schedule_id IS 'The schedule.';
COMMENT ON COLUMN pgagent.schedule_firing.due_at IS 'The due time it fired for.';
COMMENT ON COLUMN pgagent.schedule_firing.fired_at IS 'When a worker fired it.';
COMMENT ON COLUMN pgagent.schedule_firing.turn_id IS 'The turn it enqueued (NULL once that conversation is deleted).';
COMMENT ON TABLE pgagent.insert_trigger IS 'pgagent.on_insert registrations: rows inserted into table_oid enqueue a turn of the agent (the trigger pgagent_on_insert_<id>).';
COMMENT ON COLUMN pgagent.insert_trigger.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.insert_trigger.insert_trigger_id IS 'Identity (in the trigger''s name).';
COMMENT ON COLUMN pgagent.insert_trigger.table_oid IS 'The table watched.';
COMMENT ON COLUMN pgagent.insert_trigger.table_name IS 'Its name when registered.';
COMMENT ON COLUMN pgagent.insert_trigger.agent_id IS 'The agent that answers.';
COMMENT ON COLUMN pgagent.insert_trigger.message_template IS 'The user message: {column} is replaced by the new row''s value, {row} by the row as JSON.';
COMMENT ON COLUMN pgagent.insert_trigger.params IS 'Request params of each turn it makes.';
COMMENT ON COLUMN pgagent.insert_trigger.created_by IS 'The admin who registered it: the turns it makes are created by this role.';
COMMENT ON COLUMN pgagent.insert_trigger.created_at IS 'When it was registered.';

COMMENT ON TABLE pgagent.memory IS 'Long-term memories of agents (docs/memory.md): written by pgagent.remember and the memory tools, found by pgagent.recall and automatic recall (agent config memory). A user''s memories (scope user or conversation) are visible to that user and the tenant''s admins only; an agent''s (scope agent) to the whole tenant.';
COMMENT ON COLUMN pgagent.memory.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.memory.memory_id IS 'Identity.';
COMMENT ON COLUMN pgagent.memory.agent_id IS 'The agent whose memory it is.';
COMMENT ON COLUMN pgagent.memory.scope IS 'conversation (recalled in that conversation only), user (in every conversation of its owner with the agent) or agent (for every user of the agent).';
COMMENT ON COLUMN pgagent.memory.owner IS 'The role the memory is about and belongs to (scope user and conversation); NULL for scope agent.';
COMMENT ON COLUMN pgagent.memory.conversation_id IS 'The conversation of a scope conversation memory (deleted with it); NULL otherwise.';
COMMENT ON COLUMN pgagent.memory.content IS 'What is remembered: text, 1 to 20,000 characters.';
COMMENT ON COLUMN pgagent.memory.embedding IS 'The content''s embedding by embedding_model_id (pgvector; any dimension: see dims).';
COMMENT ON COLUMN pgagent.memory.dims IS 'The embedding''s dimension; 384, 768, 1024 and 1536 have an HNSW index (cosine).';
COMMENT ON COLUMN pgagent.memory.embedding_model_id IS 'The embedding model that made the embedding: memories are searched with the same model only.';
COMMENT ON COLUMN pgagent.memory.importance IS 'How much it matters, 0 to 1 (default 0.5): a third of the recall score.';
COMMENT ON COLUMN pgagent.memory.source_turn_id IS 'The turn whose remember tool call wrote it (NULL for pgagent.remember outside a turn, or once that turn was deleted).';
COMMENT ON COLUMN pgagent.memory.created_by IS 'The role that wrote it.';
COMMENT ON COLUMN pgagent.memory.created_at IS 'When it was written.';
COMMENT ON COLUMN pgagent.memory.last_recalled_at IS 'When it was last recalled (recency counts from here, else from created_at).';
COMMENT ON COLUMN pgagent.memory.recall_count IS 'How many times it was recalled.';

COMMENT ON TABLE pgagent.collection IS 'Knowledge-base collections (docs/memory.md#knowledge-base): documents searched together, with one embedding model, text search configuration and chunking.';
COMMENT ON COLUMN pgagent.collection.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.collection.collection_id IS 'Identity.';
COMMENT ON COLUMN pgagent.collection.name IS 'Unique per tenant; what pgagent.add_document, pgagent.search and knowledge tools name.';
COMMENT ON COLUMN pgagent.collection.description IS 'What it holds (free text).';
COMMENT ON COLUMN pgagent.collection.embedding_model_id IS 'The embedding model of its chunks (NULL: the tenant''s default embedding model when a chunk is embedded).';
COMMENT ON COLUMN pgagent.collection.text_config IS 'The full-text search configuration of its chunks (e.g. english, simple).';
COMMENT ON COLUMN pgagent.collection.chunk_size IS 'Longest chunk, in characters (100 to 20,000).';
COMMENT ON COLUMN pgagent.collection.chunk_overlap IS 'Characters a chunk repeats from the end of the one before it.';
COMMENT ON COLUMN pgagent.collection.created_by IS 'The admin who created it.';
COMMENT ON COLUMN pgagent.collection.created_at IS 'When it was created.';

COMMENT ON TABLE pgagent.document IS 'Knowledge-base documents; their text is cut into pgagent.chunk rows.';
COMMENT ON COLUMN pgagent.document.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.document.document_id IS 'Identity (cited by knowledge tools).';
COMMENT ON COLUMN pgagent.document.collection_id IS 'Its collection.';
COMMENT ON COLUMN pgagent.document.title IS 'Unique in the collection: pgagent.add_document with a title that exists updates that document.';
COMMENT ON COLUMN pgagent.document.body IS 'The whole text.';
COMMENT ON COLUMN pgagent.document.metadata IS 'A JSON object searches can filter on (pgagent.search(filter => ...), jsonb containment).';
COMMENT ON COLUMN pgagent.document.body_hash IS 'sha256 of the body: an update with the same body changes no chunk.';
COMMENT ON COLUMN pgagent.document.version IS '1, plus one per update that changed the body.';
COMMENT ON COLUMN pgagent.document.created_by IS 'The role that added it.';
COMMENT ON COLUMN pgagent.document.created_at IS 'When it was added.';
COMMENT ON COLUMN pgagent.document.updated_at IS 'When it was last updated.';

COMMENT ON TABLE pgagent.chunk IS 'Pieces of documents, searched by full text (tsv) and by vector (embedding, once embedded by pgagent.embed_pending).';
COMMENT ON COLUMN pgagent.chunk.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.chunk.chunk_id IS 'Identity (cited by knowledge tools).';
COMMENT ON COLUMN pgagent.chunk.document_id IS 'Its document.';
COMMENT ON COLUMN pgagent.chunk.collection_id IS 'Its document''s collection.';
COMMENT ON COLUMN pgagent.chunk.seq IS 'Its place in the document, from 1.';
COMMENT ON COLUMN pgagent.chunk.content IS 'Its text.';
COMMENT ON COLUMN pgagent.chunk.content_hash IS 'sha256 of the content: an updated document keeps the embeddings of unchanged chunks.';
COMMENT ON COLUMN pgagent.chunk.char_start IS 'Where the content starts in the document body (characters, from 0).';
COMMENT ON COLUMN pgagent.chunk.char_end IS 'Where it ends (exclusive).';
COMMENT ON COLUMN pgagent.chunk.text_config IS 'The collection''s text search configuration when the chunk was written.';
COMMENT ON COLUMN pgagent.chunk.tsv IS 'to_tsvector(text_config, content) (GIN index chunk_tsv).';
COMMENT ON COLUMN pgagent.chunk.embedding IS 'The content''s embedding; NULL until a worker embedded it (the queue).';
COMMENT ON COLUMN pgagent.chunk.dims IS 'The embedding''s dimension (384, 768, 1024 and 1536 have an HNSW index).';
COMMENT ON COLUMN pgagent.chunk.embedding_model_id IS 'The model that made the embedding.';
COMMENT ON COLUMN pgagent.chunk.embedded_at IS 'When it was embedded.';
COMMENT ON COLUMN pgagent.chunk.embed_attempts IS 'Failed embedding attempts (a chunk is retried up to 5 times).';
COMMENT ON COLUMN pgagent.chunk.embed_error IS 'The last embedding failure.';

COMMENT ON TABLE pgagent.kg_entity IS 'Knowledge-graph entities (docs/memory.md#knowledge-graph): unique by type and name per tenant.';
COMMENT ON COLUMN pgagent.kg_entity.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.kg_entity.entity_id IS 'Identity.';
COMMENT ON COLUMN pgagent.kg_entity.name IS 'Its name (1 to 500 characters).';
COMMENT ON COLUMN pgagent.kg_entity.type IS 'Its type: a lower-case name such as person, company, product (default thing).';
COMMENT ON COLUMN pgagent.kg_entity.properties IS 'A JSON object of facts about it (merged on each add).';
COMMENT ON COLUMN pgagent.kg_entity.source_document_id IS 'The knowledge-base document it was first added from, if any.';
COMMENT ON COLUMN pgagent.kg_entity.source_turn_id IS 'The turn that added it, if any.';
COMMENT ON COLUMN pgagent.kg_entity.created_by IS 'The role that added it.';
COMMENT ON COLUMN pgagent.kg_entity.created_at IS 'When it was added.';
COMMENT ON COLUMN pgagent.kg_entity.updated_at IS 'When its properties last changed.';

COMMENT ON TABLE pgagent.kg_relation IS 'Knowledge-graph relations subject -predicate-> object, with provenance.';
COMMENT ON COLUMN pgagent.kg_relation.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.kg_relation.relation_id IS 'Identity.';
COMMENT ON COLUMN pgagent.kg_relation.subject_id IS 'The entity it starts from.';
COMMENT ON COLUMN pgagent.kg_relation.predicate IS 'The relation: a lower-case name such as works_for, located_in.';
COMMENT ON COLUMN pgagent.kg_relation.object_id IS 'The entity it points to.';
COMMENT ON COLUMN pgagent.kg_relation.properties IS 'A JSON object of facts about the relation (merged on each add).';
COMMENT ON COLUMN pgagent.kg_relation.source_document_id IS 'The knowledge-base document that asserted it, if any.';
COMMENT ON COLUMN pgagent.kg_relation.source_turn_id IS 'The turn that asserted it, if any.';
COMMENT ON COLUMN pgagent.kg_relation.created_by IS 'The role that added it.';
COMMENT ON COLUMN pgagent.kg_relation.created_at IS 'When it was added.';

COMMENT ON TABLE pgagent.kg_extraction IS 'What pgagent.kg_extract did: one row per document chunk a chat model read for entities and relations.';
COMMENT ON COLUMN pgagent.kg_extraction.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.kg_extraction.extraction_id IS 'Identity.';
COMMENT ON COLUMN pgagent.kg_extraction.document_id IS 'The knowledge-base document.';
COMMENT ON COLUMN pgagent.kg_extraction.chunk_seq IS 'The chunk''s place in the document (chunk.seq, from 1).';
COMMENT ON COLUMN pgagent.kg_extraction.model IS 'The chat model''s name.';
COMMENT ON COLUMN pgagent.kg_extraction.status IS 'done (its entities and relations were added) or failed (nothing was added; see error).';
COMMENT ON COLUMN pgagent.kg_extraction.entities IS 'Entities added or merged from the chunk.';
COMMENT ON COLUMN pgagent.kg_extraction.relations IS 'Relations added or merged from the chunk.';
COMMENT ON COLUMN pgagent.kg_extraction.skipped IS 'Items of the reply left out (an empty or over-long name, an unusable predicate, more than 50 of a kind).';
COMMENT ON COLUMN pgagent.kg_extraction.error IS 'Why the chunk failed: the provider''s error, or how the reply differs from the JSON asked for.';
COMMENT ON COLUMN pgagent.kg_extraction.prompt_tokens IS 'usage.prompt_tokens of the call (tokens), if it answered.';
COMMENT ON COLUMN pgagent.kg_extraction.completion_tokens IS 'usage.completion_tokens of the call (tokens), if it answered.';
COMMENT ON COLUMN pgagent.kg_extraction.duration_ms IS 'The call and the parsing of its reply (ms).';
COMMENT ON COLUMN pgagent.kg_extraction.created_by IS 'The role that called kg_extract.';
COMMENT ON COLUMN pgagent.kg_extraction.created_at IS 'When it was recorded.';

-- evaluations (issue 11; sql/46_eval.sql, docs/evals.md)
COMMENT ON TABLE pgagent.eval_suite IS 'Evaluation suites: named sets of questions with reference answers (pgagent.create_eval_suite).';
COMMENT ON COLUMN pgagent.eval_suite.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.eval_suite.suite_id IS 'Identity.';
COMMENT ON COLUMN pgagent.eval_suite.name IS 'Unique per tenant.';
COMMENT ON COLUMN pgagent.eval_suite.description IS 'What the suite measures.';
COMMENT ON COLUMN pgagent.eval_suite.config IS 'search_path (schemas reference queries see), judge_model (the model that grades llm-scored cases).';
COMMENT ON COLUMN pgagent.eval_suite.created_by IS 'The role that created it.';
COMMENT ON COLUMN pgagent.eval_suite.created_at IS 'When it was created.';
COMMENT ON TABLE pgagent.eval_case IS 'The cases of a suite: a question, its reference answer and the scoring rule (pgagent.add_eval_case).';
COMMENT ON COLUMN pgagent.eval_case.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.eval_case.case_id IS 'Identity.';
COMMENT ON COLUMN pgagent.eval_case.suite_id IS 'The suite.';
COMMENT ON COLUMN pgagent.eval_case.name IS 'Unique in the suite.';
COMMENT ON COLUMN pgagent.eval_case.question IS 'The user message the agent is asked.';
COMMENT ON COLUMN pgagent.eval_case.expected IS 'The reference answer (when there is no reference_sql).';
COMMENT ON COLUMN pgagent.eval_case.reference_sql IS 'A one-column query whose rows are the reference answer, run as pgagent_sandbox when the case is scored.';
COMMENT ON COLUMN pgagent.eval_case.scoring IS 'exact, numeric, contains or llm (see pgagent.add_eval_case).';
COMMENT ON COLUMN pgagent.eval_case.tolerance IS 'numeric: the absolute difference allowed.';
COMMENT ON COLUMN pgagent.eval_case.decimals IS 'numeric: the answer must match the reference rounded to this many decimals (or be more precise).';
COMMENT ON COLUMN pgagent.eval_case.rubric IS 'llm: what the judge model checks.';
COMMENT ON COLUMN pgagent.eval_case.needs_tool IS 'false: a question the agent should answer without a tool (not graded for grounding).';
COMMENT ON COLUMN pgagent.eval_case.tags IS 'Free labels (e.g. count, null-handling) to group results.';
COMMENT ON COLUMN pgagent.eval_case.created_by IS 'The role that added it.';
COMMENT ON COLUMN pgagent.eval_case.created_at IS 'When it was added.';
COMMENT ON TABLE pgagent.eval_run IS 'Runs of a suite against an agent (pgagent.run_eval), with what the agent was at the time.';
COMMENT ON COLUMN pgagent.eval_run.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.eval_run.run_id IS 'Identity.';
COMMENT ON COLUMN pgagent.eval_run.suite_id IS 'The suite.';
COMMENT ON COLUMN pgagent.eval_run.agent_id IS 'The agent (NULL once it is deleted).';
COMMENT ON COLUMN pgagent.eval_run.agent_name IS 'The agent''s name at the time.';
COMMENT ON COLUMN pgagent.eval_run.model_name IS 'The agent''s model (its provider model_name) at the time.';
COMMENT ON COLUMN pgagent.eval_run.prompt_version IS 'First 12 hex digits of the SHA-256 of the agent''s persona prompt, config, tools and model name at the time.';
COMMENT ON COLUMN pgagent.eval_run.label IS 'A free label (e.g. baseline, schema-aware).';
COMMENT ON COLUMN pgagent.eval_run.queued IS 'Whether the cases were enqueued for workers (else answered in the caller''s transaction).';
COMMENT ON COLUMN pgagent.eval_run.status IS 'running, or scored once every case is.';
COMMENT ON COLUMN pgagent.eval_run.snapshot IS 'The agent at the time: system_prompt, config, tools (name, description, config), model.';
COMMENT ON COLUMN pgagent.eval_run.created_by IS 'The role that ran it.';
COMMENT ON COLUMN pgagent.eval_run.started_at IS 'When it started.';
COMMENT ON COLUMN pgagent.eval_run.finished_at IS 'When its last case was scored.';
COMMENT ON TABLE pgagent.eval_result IS 'One case of one run: the turn that answered it and its score (pgagent.score_eval).';
COMMENT ON COLUMN pgagent.eval_result.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.eval_result.run_id IS 'The run.';
COMMENT ON COLUMN pgagent.eval_result.case_id IS 'The case.';
COMMENT ON COLUMN pgagent.eval_result.conversation_id IS 'The conversation the case was asked in.';
COMMENT ON COLUMN pgagent.eval_result.turn_id IS 'The turn that answered it.';
COMMENT ON COLUMN pgagent.eval_result.status IS 'pending (the turn has not finished or was not scored yet) or scored.';
COMMENT ON COLUMN pgagent.eval_result.answer IS 'The agent''s answer (NULL when the turn did not complete).';
COMMENT ON COLUMN pgagent.eval_result.expected IS 'The reference answer as scored (a JSON array of texts when the reference query returned several rows).';
COMMENT ON COLUMN pgagent.eval_result.correct IS 'Whether the answer is right (NULL: it could not be scored; detail says why).';
COMMENT ON COLUMN pgagent.eval_result.grounded IS 'Whether the answer came from a tool result of its turn (pgagent_core.evals.grounded); NULL for cases that need no tool.';
COMMENT ON COLUMN pgagent.eval_result.detail IS 'How it was scored: matched and missing values, the judge''s verdict, errors.';
COMMENT ON COLUMN pgagent.eval_result.steps IS 'Steps of the turn.';
COMMENT ON COLUMN pgagent.eval_result.llm_calls IS 'LLM calls of the turn.';
COMMENT ON COLUMN pgagent.eval_result.tool_calls IS 'Tool calls of the turn.';
COMMENT ON COLUMN pgagent.eval_result.prompt_tokens IS 'Prompt tokens of the turn.';
COMMENT ON COLUMN pgagent.eval_result.completion_tokens IS 'Completion tokens of the turn.';
COMMENT ON COLUMN pgagent.eval_result.cost_usd IS 'Cost of the turn in USD.';
COMMENT ON COLUMN pgagent.eval_result.latency_ms IS 'The turn''s start to finish, ms.';
COMMENT ON COLUMN pgagent.eval_result.scored_at IS 'When it was scored.';
-- the evaluation views (sql/46_eval.sql)
COMMENT ON COLUMN pgagent.eval_runs.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.eval_runs.run_id IS 'The run.';
COMMENT ON COLUMN pgagent.eval_runs.suite IS 'The suite''s name.';
COMMENT ON COLUMN pgagent.eval_runs.agent IS 'The agent''s name at the time.';
COMMENT ON COLUMN pgagent.eval_runs.model IS 'The agent''s model (provider model_name) at the time.';
COMMENT ON COLUMN pgagent.eval_runs.prompt_version IS 'Hash of the agent''s persona prompt, config, tools and model at the time.';
COMMENT ON COLUMN pgagent.eval_runs.label IS 'The run''s label.';
COMMENT ON COLUMN pgagent.eval_runs.status IS 'running, or scored.';
COMMENT ON COLUMN pgagent.eval_runs.queued IS 'Whether the cases were enqueued for workers.';
COMMENT ON COLUMN pgagent.eval_runs.cases IS 'Cases in the run.';
COMMENT ON COLUMN pgagent.eval_runs.scored IS 'Cases scored so far.';
COMMENT ON COLUMN pgagent.eval_runs.correct IS 'Cases answered right.';
COMMENT ON COLUMN pgagent.eval_runs.score IS 'correct / scored (0 to 1).';
COMMENT ON COLUMN pgagent.eval_runs.grounded_share IS 'Right answers that came from a tool result / right answers to cases that need a tool (0 to 1).';
COMMENT ON COLUMN pgagent.eval_runs.mean_latency_ms IS 'Mean of the cases'' turn start to finish, ms.';
COMMENT ON COLUMN pgagent.eval_runs.llm_calls IS 'LLM calls of all cases.';
COMMENT ON COLUMN pgagent.eval_runs.prompt_tokens IS 'Prompt tokens of all cases.';
COMMENT ON COLUMN pgagent.eval_runs.completion_tokens IS 'Completion tokens of all cases.';
COMMENT ON COLUMN pgagent.eval_runs.cost_usd IS 'Cost of all cases, USD.';
COMMENT ON COLUMN pgagent.eval_runs.started_at IS 'When the run started.';
COMMENT ON COLUMN pgagent.eval_runs.finished_at IS 'When its last case was scored.';
COMMENT ON COLUMN pgagent.eval_runs.created_by IS 'The role that ran it.';
COMMENT ON COLUMN pgagent.eval_results.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.eval_results.run_id IS 'The run.';
COMMENT ON COLUMN pgagent.eval_results.suite IS 'The suite''s name.';
COMMENT ON COLUMN pgagent.eval_results.case_name IS 'The case''s name.';
COMMENT ON COLUMN pgagent.eval_results.question IS 'The question asked.';
COMMENT ON COLUMN pgagent.eval_results.scoring IS 'The scoring rule.';
COMMENT ON COLUMN pgagent.eval_results.needs_tool IS 'false: a question to answer without a tool.';
COMMENT ON COLUMN pgagent.eval_results.tags IS 'The case''s tags.';
COMMENT ON COLUMN pgagent.eval_results.status IS 'pending or scored.';
COMMENT ON COLUMN pgagent.eval_results.expected IS 'The reference answer as scored.';
COMMENT ON COLUMN pgagent.eval_results.answer IS 'The agent''s answer.';
COMMENT ON COLUMN pgagent.eval_results.correct IS 'Whether the answer is right.';
COMMENT ON COLUMN pgagent.eval_results.grounded IS 'Whether the answer came from a tool result (NULL for cases that need no tool).';
COMMENT ON COLUMN pgagent.eval_results.steps IS 'Steps of the turn.';
COMMENT ON COLUMN pgagent.eval_results.llm_calls IS 'LLM calls of the turn.';
COMMENT ON COLUMN pgagent.eval_results.tool_calls IS 'Tool calls of the turn.';
COMMENT ON COLUMN pgagent.eval_results.prompt_tokens IS 'Prompt tokens of the turn.';
COMMENT ON COLUMN pgagent.eval_results.completion_tokens IS 'Completion tokens of the turn.';
COMMENT ON COLUMN pgagent.eval_results.cost_usd IS 'Cost of the turn, USD.';
COMMENT ON COLUMN pgagent.eval_results.latency_ms IS 'The turn''s start to finish, ms.';
COMMENT ON COLUMN pgagent.eval_results.conversation_id IS 'The conversation the case was asked in.';
COMMENT ON COLUMN pgagent.eval_results.turn_id IS 'The turn that answered it.';
COMMENT ON COLUMN pgagent.eval_results.detail IS 'How it was scored.';
COMMENT ON COLUMN pgagent.eval_results.scored_at IS 'When it was scored.';
COMMENT ON COLUMN pgagent.eval_changes.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.eval_changes.run_id IS 'The run.';
COMMENT ON COLUMN pgagent.eval_changes.previous_run_id IS 'The previous run of the same suite.';
COMMENT ON COLUMN pgagent.eval_changes.case_name IS 'The case''s name.';
COMMENT ON COLUMN pgagent.eval_changes.question IS 'The question.';
COMMENT ON COLUMN pgagent.eval_changes.was_correct IS 'Right in the previous run.';
COMMENT ON COLUMN pgagent.eval_changes.is_correct IS 'Right in this run.';
COMMENT ON COLUMN pgagent.eval_changes.previous_answer IS 'The previous run''s answer.';
COMMENT ON COLUMN pgagent.eval_changes.answer IS 'This run''s answer.';

-- teams (issue 12)
COMMENT ON TABLE pgagent.team IS 'A team of agents (pgagent.create_team) that discusses topics together (pgagent.team_discuss) in one of four modes: supervisor, round_robin, debate, consensus (docs/multi-agent.md).';
COMMENT ON COLUMN pgagent.team.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.team.team_id IS 'The team.';
COMMENT ON COLUMN pgagent.team.name IS 'Its name, unique in the tenant.';
COMMENT ON COLUMN pgagent.team.mode IS 'supervisor (one agent delegates to the members as tools), round_robin, debate (a judge decides) or consensus (rounds until a vote reaches the quorum).';
COMMENT ON COLUMN pgagent.team.members IS 'The member agents'' names, in speaking order.';
COMMENT ON COLUMN pgagent.team.config IS 'supervisor, judge, quorum (share of members), max_rounds, instructions (pgagent.config_schema(''team.config'')).';
COMMENT ON COLUMN pgagent.team.created_by IS 'The role that created it.';
COMMENT ON COLUMN pgagent.team.created_at IS 'When it was created.';
COMMENT ON TABLE pgagent.discussion IS 'One discussion of a team (pgagent.team_discuss): its topic, how it ended and its outcome. Its messages are member turns listed in pgagent.discussion_turn.';
COMMENT ON COLUMN pgagent.discussion.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.discussion.discussion_id IS 'The discussion.';
COMMENT ON COLUMN pgagent.discussion.team_id IS 'The team.';
COMMENT ON COLUMN pgagent.discussion.mode IS 'The team''s mode when it ran.';
COMMENT ON COLUMN pgagent.discussion.topic IS 'What the team was asked.';
COMMENT ON COLUMN pgagent.discussion.max_rounds IS 'Rounds allowed.';
COMMENT ON COLUMN pgagent.discussion.status IS 'running, completed, no_consensus (consensus mode: no vote reached the quorum in max_rounds) or failed (a member''s turn did not complete).';
COMMENT ON COLUMN pgagent.discussion.rounds IS 'Rounds held.';
COMMENT ON COLUMN pgagent.discussion.outcome IS 'The result (see pgagent.team_discussions.outcome).';
COMMENT ON COLUMN pgagent.discussion.detail IS 'Consensus tallies per round and the quorum, the judge, delegations, or the error.';
COMMENT ON COLUMN pgagent.discussion.created_by IS 'The role that started it.';
COMMENT ON COLUMN pgagent.discussion.created_at IS 'When it started.';
COMMENT ON COLUMN pgagent.discussion.finished_at IS 'When it ended (NULL while running).';
COMMENT ON TABLE pgagent.discussion_turn IS 'The messages of a discussion in the order spoken: each is the answer of one turn of one agent (whose steps record how it was made).';
COMMENT ON COLUMN pgagent.discussion_turn.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.discussion_turn.discussion_id IS 'The discussion.';
COMMENT ON COLUMN pgagent.discussion_turn.seq IS 'Order in the discussion (1, 2, ...).';
COMMENT ON COLUMN pgagent.discussion_turn.round IS 'The round it was said in.';
COMMENT ON COLUMN pgagent.discussion_turn.role IS 'member, judge (debate) or supervisor.';
COMMENT ON COLUMN pgagent.discussion_turn.agent IS 'The agent that spoke.';
COMMENT ON COLUMN pgagent.discussion_turn.turn_id IS 'The turn whose answer the message is.';
COMMENT ON COLUMN pgagent.discussion_turn.vote IS 'Consensus mode: the vote the message states (its last VOTE: line), as written.';

-- the HTTP gateway (issue 13)
COMMENT ON TABLE pgagent.api_key IS 'API keys of the HTTP gateway (pgagent.create_api_key): bcrypt hashes, never the keys; each maps to the database role its requests run as (docs/http.md). Admins read it without the hash (pgagent.api_keys).';
COMMENT ON COLUMN pgagent.api_key.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.api_key.key_id IS 'The key.';
COMMENT ON COLUMN pgagent.api_key.name IS 'Its name, unique in the tenant.';
COMMENT ON COLUMN pgagent.api_key.prefix IS 'The key''s first 12 characters (pga_ and 8 hex digits): how the gateway finds it, and how people recognise it.';
COMMENT ON COLUMN pgagent.api_key.hash IS 'bcrypt hash of the whole key (pgcrypto crypt, gen_salt(''bf'', 10)). Readable by no tenant role.';
COMMENT ON COLUMN pgagent.api_key.role_name IS 'The database role requests with the key run as (SET ROLE by the gateway).';
COMMENT ON COLUMN pgagent.api_key.rate_per_min IS 'Requests per minute the gateway allows the key (HTTP 429 beyond).';
COMMENT ON COLUMN pgagent.api_key.created_by IS 'The admin who created it.';
COMMENT ON COLUMN pgagent.api_key.created_at IS 'When it was created.';
COMMENT ON COLUMN pgagent.api_key.last_used_at IS 'When the gateway last authenticated it (updated at most once a minute).';
COMMENT ON COLUMN pgagent.api_key.revoked_at IS 'When it was revoked (NULL: live).';
COMMENT ON COLUMN pgagent.api_key.revoked_by IS 'Who revoked it.';
