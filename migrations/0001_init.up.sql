-- BMDB: machines, their tags, sessions, work locks, backoffs and work history.
-- This is the pre-split schema: the shepherd's only process is ShepherdAccess.

CREATE TYPE process AS ENUM ('ShepherdAccess');
CREATE TYPE work_event AS ENUM ('Started', 'Finished', 'Failed', 'Canceled', 'Lost', 'BackoffCleared');

CREATE TABLE machines (
    machine_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    machine_created_at timestamptz NOT NULL DEFAULT now()
);

-- Tag: the machine exists at a provider.
CREATE TABLE machine_provided (
    machine_id uuid PRIMARY KEY REFERENCES machines ON DELETE CASCADE,
    provider text NOT NULL,
    provider_id text NOT NULL,
    provider_address text,
    provider_location text,
    provider_status text NOT NULL DEFAULT 'unknown',
    UNIQUE (provider, provider_id)
);

-- Tag: the shepherd started the agent, which holds this ed25519 public key.
CREATE TABLE machine_agent_started (
    machine_id uuid PRIMARY KEY REFERENCES machines ON DELETE CASCADE,
    agent_started_at timestamptz NOT NULL,
    agent_public_key bytea NOT NULL
);

-- Tag: the agent's last heartbeat.
CREATE TABLE machine_agent_heartbeat (
    machine_id uuid PRIMARY KEY REFERENCES machines ON DELETE CASCADE,
    agent_heartbeat_at timestamptz NOT NULL
);

-- Tag: the hardware the agent reported.
CREATE TABLE machine_hardware_report (
    machine_id uuid PRIMARY KEY REFERENCES machines ON DELETE CASCADE,
    hardware_report jsonb NOT NULL,
    hardware_reported_at timestamptz NOT NULL DEFAULT now()
);

-- A component's liveness lease. Work dies with its session.
CREATE TABLE sessions (
    session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_component text NOT NULL,
    session_host text NOT NULL DEFAULT '',
    session_pid integer NOT NULL DEFAULT 0,
    session_version text NOT NULL DEFAULT '',
    session_created_at timestamptz NOT NULL DEFAULT now(),
    session_interval_seconds integer NOT NULL CHECK (session_interval_seconds > 0),
    session_deadline timestamptz NOT NULL
);
CREATE INDEX sessions_deadline ON sessions (session_deadline);

-- A lock held while a process acts on a machine.
CREATE TABLE work (
    machine_id uuid NOT NULL REFERENCES machines ON DELETE CASCADE,
    session_id uuid NOT NULL REFERENCES sessions ON DELETE CASCADE,
    process process NOT NULL,
    work_started_at timestamptz NOT NULL DEFAULT now(),
    work_detail text NOT NULL DEFAULT '',
    PRIMARY KEY (machine_id, process)
);
CREATE INDEX work_session ON work (session_id);

CREATE TABLE work_backoff (
    machine_id uuid NOT NULL REFERENCES machines ON DELETE CASCADE,
    process process NOT NULL,
    backoff_until timestamptz NOT NULL,
    backoff_cause text NOT NULL,
    backoff_last_interval_seconds bigint NOT NULL,
    PRIMARY KEY (machine_id, process)
);

-- Append-only audit trail. machine_id is deliberately not a foreign key:
-- history outlives deleted machines. The session's component and host are
-- copied because sessions are deleted when they end.
CREATE TABLE work_history (
    work_history_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    machine_id uuid NOT NULL,
    process process NOT NULL,
    event work_event NOT NULL,
    event_at timestamptz NOT NULL DEFAULT now(),
    cause text NOT NULL DEFAULT '',
    session_id uuid,
    session_component text NOT NULL DEFAULT '',
    session_host text NOT NULL DEFAULT ''
);
CREATE INDEX work_history_machine ON work_history (machine_id, work_history_id);
