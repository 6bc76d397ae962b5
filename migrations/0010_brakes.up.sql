-- Brakes (issue 13): operator holds, needs-attention marks, breaker overrides,
-- the heartbeat observer's liveness and the policies a running shepherd uses.
-- Every process's candidate rule reads these (pkg/bmdb rules.go).

ALTER TYPE work_event ADD VALUE IF NOT EXISTS 'HoldPlaced';
ALTER TYPE work_event ADD VALUE IF NOT EXISTS 'HoldReleased';
ALTER TYPE work_event ADD VALUE IF NOT EXISTS 'HoldExpired';
ALTER TYPE work_event ADD VALUE IF NOT EXISTS 'AttentionMarked';
ALTER TYPE work_event ADD VALUE IF NOT EXISTS 'AttentionCleared';
ALTER TYPE work_event ADD VALUE IF NOT EXISTS 'BreakerOverridden';
ALTER TYPE work_event ADD VALUE IF NOT EXISTS 'CancelRequested';
ALTER TYPE work_event ADD VALUE IF NOT EXISTS 'LockBroken';
ALTER TYPE work_event ADD VALUE IF NOT EXISTS 'PowerAction';

-- An operator's "leave this machine alone": no process (or only process)
-- starts new work on it while the hold is active, that is while hold_until
-- is NULL or in the future. Expired rows stop holding by themselves; the
-- shepherd's sweep records HoldExpired and deletes them.
CREATE TABLE machine_holds (
    hold_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    machine_id uuid NOT NULL REFERENCES machines ON DELETE CASCADE,
    process process NULL, -- NULL: every process
    hold_reason text NOT NULL,
    hold_actor text NOT NULL,
    hold_placed_at timestamptz NOT NULL DEFAULT now(),
    hold_until timestamptz NULL -- NULL: until released
);
-- At most one hold per machine and process, or machine-wide (NULL counts as
-- one value here: ON CONFLICT (machine_id, process) replaces a machine-wide
-- hold too). Candidate rules look holds up by machine through it.
CREATE UNIQUE INDEX machine_holds_scope ON machine_holds (machine_id, process) NULLS NOT DISTINCT;
CREATE INDEX machine_holds_until ON machine_holds (hold_until) WHERE hold_until IS NOT NULL;

-- A machine that needs a person: the remediation budget is exhausted, ... The
-- process leaves it alone until an operator clears the mark.
CREATE TABLE machine_attention (
    machine_id uuid NOT NULL REFERENCES machines ON DELETE CASCADE,
    process process NOT NULL,
    attention_reason text NOT NULL,
    attention_since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (machine_id, process)
);

-- An operator forcing a breaker closed for a bounded time.
CREATE TABLE breaker_overrides (
    breaker_scope text PRIMARY KEY, -- 'fleet' or 'location:<name>'
    override_until timestamptz NOT NULL,
    override_reason text NOT NULL,
    override_actor text NOT NULL,
    override_placed_at timestamptz NOT NULL DEFAULT now()
);

-- The remediation budget counts Recovery's Started events per machine in a
-- sliding window: read them without walking the machine's whole history.
CREATE INDEX work_history_recovery_started ON work_history (machine_id, event_at)
WHERE process = 'ShepherdRecovery' AND event = 'Started';

-- The breaker counts a location's machines only when that location has more
-- stale machines than the absolute threshold.
CREATE INDEX machine_provided_location ON machine_provided (provider_location);

-- The circuit breakers as last evaluated: one statement (pkg/bmdb
-- EvaluateBreakers, run by every shepherd every second) counts silent
-- machines per location and in the fleet on one snapshot and writes every
-- scope here; every claim reads these rows, so all shepherds agree and a
-- claim does not count the fleet. A fleet row older than the policy's
-- maximum age counts as open. Locations without a row are closed.
CREATE TABLE breaker_states (
    breaker_scope text PRIMARY KEY, -- 'fleet' or 'location:<name>'
    breaker_open boolean NOT NULL,  -- tripped and not overridden
    breaker_tripped boolean NOT NULL,
    breaker_silent bigint NOT NULL, -- machines counted as silent
    breaker_machines bigint NOT NULL,
    breaker_limit bigint NOT NULL,  -- max(absolute, fraction x machines)
    breaker_evaluated_at timestamptz NOT NULL,
    breaker_opened_at timestamptz NULL
);

-- Machines per location, kept by triggers, so the breakers' fraction of the
-- fleet costs one row, not a count of a million.
CREATE TABLE machine_location_counts (
    provider_location text PRIMARY KEY, -- '' for machines without one
    location_machines bigint NOT NULL
);
INSERT INTO machine_location_counts
SELECT coalesce(provider_location, ''), count(*) FROM machine_provided GROUP BY 1;

-- Inserts and deletes count per statement (a seed inserts a million rows in
-- one); a location changes rarely, so an update counts per row, and only when
-- the location did change (the flag updates of migration 0004 do not).
CREATE FUNCTION machine_location_counts_add(loc text, delta bigint) RETURNS void LANGUAGE sql AS $$
    INSERT INTO machine_location_counts AS c VALUES (coalesce(loc, ''), delta)
    ON CONFLICT (provider_location) DO UPDATE SET location_machines = c.location_machines + excluded.location_machines
$$;
CREATE FUNCTION machine_location_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM machine_location_counts_add(loc, n)
    FROM (SELECT provider_location AS loc, count(*) AS n FROM new_rows GROUP BY 1 ORDER BY 1) x;
    RETURN NULL;
END $$;
CREATE FUNCTION machine_location_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM machine_location_counts_add(loc, -n)
    FROM (SELECT provider_location AS loc, count(*) AS n FROM old_rows GROUP BY 1 ORDER BY 1) x;
    RETURN NULL;
END $$;
CREATE FUNCTION machine_location_counts_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM machine_location_counts_add(OLD.provider_location, -1);
    PERFORM machine_location_counts_add(NEW.provider_location, 1);
    RETURN NULL;
END $$;
CREATE TRIGGER machine_location_counts_insert AFTER INSERT ON machine_provided
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION machine_location_counts_inserted();
CREATE TRIGGER machine_location_counts_delete AFTER DELETE ON machine_provided
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION machine_location_counts_deleted();
CREATE TRIGGER machine_location_counts_update AFTER UPDATE OF provider_location ON machine_provided
FOR EACH ROW WHEN (OLD.provider_location IS DISTINCT FROM NEW.provider_location)
EXECUTE FUNCTION machine_location_counts_moved();

-- The observer of heartbeats: one row, written by every heartbeat endpoint
-- while it is alive and able to write to BMDB. A silence longer than
-- observer_gap_seconds (the endpoint down, or BMDB unreachable) is a gap: the
-- next write starts a new watch (observer_since), and no machine's heartbeat
-- counts as stale until the stale threshold has passed since then.
CREATE TABLE heartbeat_observer (
    observer_singleton boolean PRIMARY KEY DEFAULT true CHECK (observer_singleton),
    observer_alive_at timestamptz NOT NULL,
    observer_since timestamptz NOT NULL,
    observer_gap_seconds double precision NOT NULL CHECK (observer_gap_seconds > 0),
    observer_host text NOT NULL DEFAULT ''
);

-- The gaps seen, for explain and for people reading what happened.
CREATE TABLE heartbeat_observer_gaps (
    gap_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gap_from timestamptz NOT NULL, -- the last write before the silence
    gap_to timestamptz NOT NULL    -- the first write after it
);

-- The thresholds and policies a shepherd runs with (JSON of bmdb.Policy),
-- recorded when it starts so that views and explain use its real numbers.
-- Not a foreign key to sessions: the last policy is still worth showing while
-- no shepherd runs.
CREATE TABLE shepherd_policies (
    session_id uuid PRIMARY KEY,
    policy jsonb NOT NULL,
    policy_recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shepherd_policies_recorded ON shepherd_policies (policy_recorded_at);

CREATE TRIGGER machine_holds_notify AFTER INSERT OR UPDATE OR DELETE ON machine_holds
FOR EACH STATEMENT WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
CREATE TRIGGER machine_attention_notify AFTER INSERT OR UPDATE OR DELETE ON machine_attention
FOR EACH STATEMENT WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
CREATE TRIGGER breaker_overrides_notify AFTER INSERT OR UPDATE OR DELETE ON breaker_overrides
FOR EACH STATEMENT WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
CREATE TRIGGER heartbeat_observer_gaps_notify AFTER INSERT ON heartbeat_observer_gaps
FOR EACH STATEMENT WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
