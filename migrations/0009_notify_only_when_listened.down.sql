DROP TRIGGER machines_notify ON machines;
CREATE TRIGGER machines_notify AFTER INSERT OR DELETE ON machines
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER machine_provided_notify ON machine_provided;
CREATE TRIGGER machine_provided_notify AFTER INSERT OR UPDATE OR DELETE ON machine_provided
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER machine_agent_started_notify ON machine_agent_started;
CREATE TRIGGER machine_agent_started_notify AFTER INSERT OR DELETE ON machine_agent_started
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER machine_agent_heartbeat_notify ON machine_agent_heartbeat;
CREATE TRIGGER machine_agent_heartbeat_notify AFTER INSERT OR DELETE ON machine_agent_heartbeat
FOR EACH ROW EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER work_notify ON work;
CREATE TRIGGER work_notify AFTER INSERT OR UPDATE OR DELETE ON work
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER work_backoff_notify ON work_backoff;
CREATE TRIGGER work_backoff_notify AFTER INSERT OR UPDATE OR DELETE ON work_backoff
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER sessions_notify ON sessions;
CREATE TRIGGER sessions_notify AFTER INSERT OR DELETE ON sessions
FOR EACH STATEMENT EXECUTE FUNCTION bmdb_notify_change();
DROP TRIGGER work_history_notify ON work_history;
CREATE TRIGGER work_history_notify AFTER INSERT ON work_history
FOR EACH ROW EXECUTE FUNCTION work_history_notify();

DROP FUNCTION change_listened();
DROP TABLE change_listeners;
