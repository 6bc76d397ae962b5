-- Plans that stay right as BMDB grows. PostgreSQL keeps a prepared
-- statement's generic plan, and PL/pgSQL a function's, for the life of the
-- connection (until the tables are next analyzed). Plans made while
-- work_history was small (a new BMDB, a shepherd's first claims) scanned the
-- whole history in every claim from then on: at 40k events each claim spent
-- 0.5 ms in its newest-event lookup and 0.9 ms in work_claim_check, four
-- times the claim's search. Both read only the claimed machine's newest
-- events, which the (machine_id, work_history_id) index finds directly, so
-- both are planned with sequential scans off, whatever the statistics say;
-- so is the release, below.

-- The newest history event of a machine, 0 if none. STABLE, so that it reads
-- the snapshot of the claim statement that calls it: work_claim_verify
-- relies on exactly that snapshot.
CREATE FUNCTION work_history_newest(machine uuid) RETURNS bigint
LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
BEGIN
    RETURN coalesce((SELECT max(work_history_id) FROM work_history WHERE machine_id = machine), 0);
END $$;

-- The claim's check, now inside the claim statement itself (one statement
-- where 0012 needed two): the claim calls it after its insert, with the
-- machine and the newest event its snapshot saw. VOLATILE, so that its query
-- takes a fresh snapshot (READ COMMITTED, BMDB's isolation) and sees what
-- committed after the claim's own snapshot: any event on the machine since,
-- by anyone else, aborts the claim as a serialization failure, and the
-- claimer looks again. Returns the machine.
CREATE FUNCTION work_claim_verify(machine uuid, claimer uuid, seen bigint) RETURNS uuid
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM work_history h
               WHERE h.machine_id = machine AND h.work_history_id > seen
               AND h.session_id IS DISTINCT FROM claimer) THEN
        RAISE EXCEPTION 'machine % changed while it was claimed', machine USING ERRCODE = '40001';
    END IF;
    RETURN machine;
END $$;

-- The release of work (Finish, Fail, Cancel), one call: if the session is
-- alive, delete the work row, with clear_backoff the process's backoff, and
-- record ev. A function so that its plans look rows up by key: the work
-- table's rows come and go thousands of times a second, its heap grows by
-- dead rows between vacuums, and a plan cached while it was a page long
-- scanned 100 pages in every release. VOLATILE (READ COMMITTED): each
-- statement sees what committed before it, as the lock waits of the one
-- statement this replaces did.
CREATE FUNCTION work_release(machine uuid, proc process, session uuid, ev work_event, why text,
                             component text, host text, clear_backoff boolean,
                             OUT alive boolean, OUT released boolean)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $$
BEGIN
    alive := EXISTS (SELECT 1 FROM sessions WHERE session_id = session AND session_deadline > now());
    released := false;
    IF NOT alive THEN
        RETURN;
    END IF;
    DELETE FROM work WHERE machine_id = machine AND process = proc AND session_id = session;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    released := true;
    IF clear_backoff THEN
        DELETE FROM work_backoff WHERE machine_id = machine AND process = proc;
    END IF;
    INSERT INTO work_history (machine_id, process, event, cause, session_id, session_component, session_host)
    VALUES (machine, proc, ev, why, session, component, host);
END $$;

-- Shepherds of the previous version still call 0012's check during a
-- rolling upgrade.
ALTER FUNCTION work_claim_check(uuid, process) SET enable_seqscan = off;

-- Enum-to-text casts are not immutable, so PostgreSQL cannot inline the SQL
-- version into the work_exclusion index and planned its body on every insert
-- (two plans per claim). PL/pgSQL caches the plan; the result is unchanged,
-- so the index stays valid.
CREATE OR REPLACE FUNCTION process_exclusion_group(p process) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN CASE p::text
        WHEN 'ShepherdAccess' THEN 'shepherd'
        WHEN 'ShepherdAgentStart' THEN 'shepherd'
        WHEN 'ShepherdRecovery' THEN 'shepherd'
        ELSE p::text
    END;
END $$;

INSERT INTO bmdb_grants (object_kind, object_name, viewer, operator, shepherd, endpoint) VALUES
('function', 'work_history_newest(uuid)',             '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'work_claim_verify(uuid,uuid,bigint)',   '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'work_release(uuid,process,uuid,work_event,text,text,text,boolean)', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}');
SELECT bmdb_apply_roles();
