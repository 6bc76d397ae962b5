-- Change notifications for live views (machines watch, history --follow).
-- bmdb_change carries the table name, once per statement, so a bulk load costs
-- one notification; heartbeat updates are left out (views refresh ages on a
-- timer), only a machine's first heartbeat is announced.
CREATE FUNCTION bmdb_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bmdb_change', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER machines_notify AFTER INSERT OR DELETE ON machines
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
CREATE TRIGGER machine_provided_notify AFTER INSERT OR UPDATE OR DELETE ON machine_provided
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
CREATE TRIGGER machine_agent_started_notify AFTER INSERT OR DELETE ON machine_agent_started
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
CREATE TRIGGER machine_agent_heartbeat_notify AFTER INSERT OR DELETE ON machine_agent_heartbeat
FOR EACH ROW EXECUTE FUNCTION bmdb_notify_change();
CREATE TRIGGER work_notify AFTER INSERT OR UPDATE OR DELETE ON work
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
CREATE TRIGGER work_backoff_notify AFTER INSERT OR UPDATE OR DELETE ON work_backoff
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
CREATE TRIGGER sessions_notify AFTER INSERT OR DELETE ON sessions
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();

-- work_history carries the machine and the event id, one per event.
CREATE FUNCTION work_history_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('work_history', NEW.machine_id::text || ' ' || NEW.work_history_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER work_history_notify AFTER INSERT ON work_history
FOR EACH ROW EXECUTE FUNCTION work_history_notify();
