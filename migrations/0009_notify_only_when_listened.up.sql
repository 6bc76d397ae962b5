-- NOTIFY makes every transaction that sends one take a cluster-wide lock at
-- commit and hold it until the commit is done, so notifying transactions
-- commit one at a time. With claims and releases notifying (migration 0005),
-- 16 claiming sessions spent most of their time waiting on that lock (wait
-- event Lock:object). Triggers now notify only while some live view listens:
-- each listener holds a lease here (pkg/bmdb Listen) and renews it while it
-- runs; a listener that died stops counting when its lease ends.
CREATE TABLE change_listeners (
    listener_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    listener_host text NOT NULL DEFAULT '',
    listener_pid integer NOT NULL DEFAULT pg_backend_pid(), -- the listening backend
    listener_deadline timestamptz NOT NULL
);

CREATE FUNCTION change_listened() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM change_listeners WHERE listener_deadline > now())
$$;

CREATE OR REPLACE FUNCTION bmdb_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF change_listened() THEN
        PERFORM pg_notify('bmdb_change', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION work_history_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF change_listened() THEN
        PERFORM pg_notify('work_history', NEW.machine_id::text || ' ' || NEW.work_history_id::text);
    END IF;
    RETURN NULL;
END $$;
