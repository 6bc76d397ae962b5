-- NOTIFY makes every transaction that sends one take a cluster-wide lock at
-- commit and hold it until the commit is done, so notifying transactions
-- commit one at a time. With claims and releases notifying (migration 0005),
-- 16 claiming sessions spent most of their time waiting on that lock (wait
-- event Lock:object). The triggers now fire only while some live view
-- listens: each listener holds a lease here (pkg/bmdb Listen) and renews it
-- while it runs; a listener that died stops counting when its lease ends.
-- The check is the triggers' WHEN, so with nobody listening a writer does not
-- even call the trigger function (calling it cost claim+finish a quarter of
-- its throughput).
CREATE TABLE change_listeners (
    listener_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    listener_host text NOT NULL DEFAULT '',
    listener_pid integer NOT NULL DEFAULT pg_backend_pid(), -- the listening backend
    listener_deadline timestamptz NOT NULL
);

-- plpgsql, not sql: its plan is cached for the session, where a sql function
-- in a trigger's WHEN is planned again for every statement.
CREATE FUNCTION change_listened() RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM change_listeners WHERE listener_deadline > now());
END $$;

DROP TRIGGER machines_notify ON machines;
CREATE TRIGGER machines_notify AFTER INSERT OR DELETE ON machines
FOR EACH STATEMENT WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER machine_provided_notify ON machine_provided;
CREATE TRIGGER machine_provided_notify AFTER INSERT OR UPDATE OR DELETE ON machine_provided
FOR EACH STATEMENT WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER machine_agent_started_notify ON machine_agent_started;
CREATE TRIGGER machine_agent_started_notify AFTER INSERT OR DELETE ON machine_agent_started
FOR EACH STATEMENT WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER machine_agent_heartbeat_notify ON machine_agent_heartbeat;
CREATE TRIGGER machine_agent_heartbeat_notify AFTER INSERT OR DELETE ON machine_agent_heartbeat
FOR EACH ROW WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER work_notify ON work;
CREATE TRIGGER work_notify AFTER INSERT OR UPDATE OR DELETE ON work
FOR EACH STATEMENT WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER work_backoff_notify ON work_backoff;
CREATE TRIGGER work_backoff_notify AFTER INSERT OR UPDATE OR DELETE ON work_backoff
FOR EACH STATEMENT WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER sessions_notify ON sessions;
CREATE TRIGGER sessions_notify AFTER INSERT OR DELETE ON sessions
FOR EACH STATEMENT WHEN (change_listened()) EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER work_history_notify ON work_history;
CREATE TRIGGER work_history_notify AFTER INSERT ON work_history
FOR EACH ROW WHEN (change_listened()) EXECUTE FUNCTION work_history_notify();
