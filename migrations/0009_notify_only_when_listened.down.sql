CREATE OR REPLACE FUNCTION bmdb_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bmdb_change', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION work_history_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('work_history', NEW.machine_id::text || ' ' || NEW.work_history_id::text);
    RETURN NULL;
END $$;

DROP FUNCTION change_listened();
DROP TABLE change_listeners;
