-- An operator can ask Recovery to act on a machine now, whatever its
-- heartbeat says (`bmctl machines watch --allow-actions`, key r). The request
-- is a tag on the agent-started tag: Recovery only acts on machines whose
-- agent was started, and when Recovery succeeds it removes that tag, which
-- takes the request with it, so a request is served once. A failed Recovery
-- leaves it in place, to be retried after the Recovery backoff like any
-- candidate. RecoveryCandidates includes requested machines.
CREATE TABLE machine_recovery_requested (
    machine_id uuid PRIMARY KEY REFERENCES machine_agent_started ON DELETE CASCADE,
    recovery_requested_at timestamptz NOT NULL DEFAULT now(),
    recovery_requested_by text NOT NULL
);

CREATE TRIGGER machine_recovery_requested_notify AFTER INSERT OR DELETE ON machine_recovery_requested
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();

-- The request is recorded in the machine's work history.
ALTER TYPE work_event ADD VALUE IF NOT EXISTS 'RecoveryRequested';
