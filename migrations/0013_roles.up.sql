-- Least privilege (issue 15): one NOLOGIN group role per component, each with
-- only what that component does. A site grants a group role to the login each
-- component runs as (`bmctl db roles grant <login> <role>`).
--
-- The decisions live in bmdb_grants, one row per table, sequence and function
-- of the schema, with the privileges of every role ('{}': none). A migration
-- that adds an object adds its row here (or inserts one and calls
-- bmdb_apply_roles()); pkg/bmdb's roles test fails while any object has no row.
-- bmdb_apply_roles() makes the database match the rows: it creates the roles
-- when missing, revokes everything from them (and PUBLIC on functions) and
-- grants what the rows say. `bmctl db roles apply` calls it; it is idempotent.
--
-- Privileges are GRANT clauses: 'SELECT', 'UPDATE (col, col)', 'EXECUTE'.
-- A row lock (SELECT ... FOR UPDATE) needs UPDATE on some column, which is why
-- a few roles hold a column UPDATE they never use to write.

CREATE TABLE bmdb_grants (
    object_kind text NOT NULL CHECK (object_kind IN ('table', 'sequence', 'function')),
    -- a table or sequence name, or a function's regprocedure ('f(uuid,bytea)')
    object_name text NOT NULL,
    viewer text[] NOT NULL,
    operator text[] NOT NULL,
    shepherd text[] NOT NULL,
    endpoint text[] NOT NULL,
    PRIMARY KEY (object_kind, object_name)
);

-- The endpoint writes heartbeats only through these, so it can write nothing
-- for a machine whose started agent holds another key. SECURITY DEFINER: they
-- run as the schema owner (search_path pinned by bmdb_apply_roles()).
-- plpgsql, not sql: its plans are cached for the session.
CREATE FUNCTION bmdb_record_heartbeats(ids uuid[], pubkeys bytea[])
RETURNS TABLE (machine_id uuid, agent_public_key bytea)
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    -- At most one key per machine matches its started tag, so s has one row
    -- per machine and the upsert touches each row once. Rows are locked in
    -- machine order, so concurrent batches do not deadlock each other.
    RETURN QUERY
    WITH s AS MATERIALIZED (
        SELECT t.machine_id, t.agent_public_key
        FROM machine_agent_started t
        WHERE (t.machine_id, t.agent_public_key) IN (SELECT * FROM unnest(ids, pubkeys))
        ORDER BY t.machine_id
        FOR KEY SHARE OF t
    ), u AS (
        INSERT INTO machine_agent_heartbeat AS h (machine_id, agent_heartbeat_at, agent_heartbeat_coarse_at)
        SELECT s.machine_id, now(), now() FROM s
        ORDER BY s.machine_id
        ON CONFLICT ON CONSTRAINT machine_agent_heartbeat_pkey DO UPDATE SET agent_heartbeat_at = excluded.agent_heartbeat_at
        RETURNING h.machine_id
    )
    SELECT s.machine_id, s.agent_public_key FROM s JOIN u ON u.machine_id = s.machine_id;
END $$;

-- A heartbeat carrying a hardware report: both or nothing, and only when key
-- is the machine's started agent's key.
CREATE FUNCTION bmdb_record_hardware_report(machine uuid, key bytea, report jsonb)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    PERFORM 1 FROM machine_agent_started t
    WHERE t.machine_id = machine AND t.agent_public_key = key
    FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO machine_agent_heartbeat AS h (machine_id, agent_heartbeat_at, agent_heartbeat_coarse_at)
    VALUES (machine, now(), now())
    ON CONFLICT ON CONSTRAINT machine_agent_heartbeat_pkey DO UPDATE SET agent_heartbeat_at = excluded.agent_heartbeat_at;
    INSERT INTO machine_hardware_report AS r (machine_id, hardware_report, hardware_reported_at)
    VALUES (machine, report, now())
    ON CONFLICT ON CONSTRAINT machine_hardware_report_pkey DO UPDATE SET hardware_report = excluded.hardware_report,
        hardware_reported_at = excluded.hardware_reported_at;
    RETURN true;
END $$;

-- History is append-only: only the schema owner (bmctl history prune) may
-- delete or change it, whatever grants a role was given by mistake.
CREATE FUNCTION work_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
        RAISE EXCEPTION 'work_history is append-only: only its owner may % it (bmctl history prune)', lower(TG_OP)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER work_history_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON work_history
FOR EACH STATEMENT EXECUTE FUNCTION work_history_append_only();

-- Each prune of history, kept as its own append-only record.
CREATE TABLE work_history_prunes (
    prune_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pruned_at timestamptz NOT NULL DEFAULT now(),
    pruned_before timestamptz NOT NULL,
    pruned_events bigint NOT NULL,
    pruned_by text NOT NULL -- the database role and the actor it said it was
);

-- Which privileges of bmdb_grants the current user lacks for role ('viewer',
-- 'operator', 'shepherd' or 'endpoint'): the components' start-up check.
CREATE FUNCTION bmdb_missing_grants(role text)
RETURNS TABLE (object_kind text, object_name text, privilege text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    g record;
    p text;
    priv text;
    cols text[];
    c text;
BEGIN
    FOR g IN SELECT * FROM bmdb_grants ORDER BY object_kind, object_name LOOP
        FOREACH p IN ARRAY CASE role
            WHEN 'viewer' THEN g.viewer WHEN 'operator' THEN g.operator
            WHEN 'shepherd' THEN g.shepherd WHEN 'endpoint' THEN g.endpoint
            ELSE NULL END
        LOOP
            priv := upper(trim(split_part(p, '(', 1)));
            IF g.object_kind = 'function' THEN
                IF NOT has_function_privilege(g.object_name, priv) THEN
                    object_kind := g.object_kind; object_name := g.object_name; privilege := p; RETURN NEXT;
                END IF;
            ELSIF g.object_kind = 'sequence' THEN
                IF NOT has_sequence_privilege(g.object_name, priv) THEN
                    object_kind := g.object_kind; object_name := g.object_name; privilege := p; RETURN NEXT;
                END IF;
            ELSIF position('(' IN p) > 0 THEN
                cols := string_to_array(rtrim(split_part(p, '(', 2), ') '), ',');
                FOREACH c IN ARRAY cols LOOP
                    IF NOT has_column_privilege(g.object_name, trim(c), priv) THEN
                        object_kind := g.object_kind; object_name := g.object_name; privilege := p; RETURN NEXT;
                        EXIT;
                    END IF;
                END LOOP;
            ELSIF NOT has_table_privilege(g.object_name, priv) THEN
                object_kind := g.object_kind; object_name := g.object_name; privilege := p; RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END $$;

-- Makes the roles and their privileges in this database what bmdb_grants
-- says. Needs CREATEROLE when a role is missing (roles are cluster-wide:
-- several BMDBs in one cluster share them).
CREATE FUNCTION bmdb_apply_roles() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r text;
    g record;
    privs text[];
    f regprocedure;
BEGIN
    FOREACH r IN ARRAY ARRAY['bmctl_viewer', 'bmctl_operator', 'bmctl_shepherd', 'bmctl_endpoint'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- another database of this cluster created it meanwhile
            END;
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), r);
    END LOOP;
    FOR g IN SELECT * FROM bmdb_grants ORDER BY object_kind, object_name LOOP
        IF g.object_kind = 'function' THEN
            IF to_regprocedure(g.object_name) IS NULL THEN
                RAISE EXCEPTION 'bmdb_grants names function %, which does not exist: fix the row', g.object_name;
            END IF;
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, bmctl_viewer, bmctl_operator, bmctl_shepherd, bmctl_endpoint', g.object_name);
        ELSE
            IF to_regclass(g.object_name) IS NULL THEN
                RAISE EXCEPTION 'bmdb_grants names % %, which does not exist: fix the row', g.object_kind, g.object_name;
            END IF;
            EXECUTE format('REVOKE ALL ON %s %s FROM bmctl_viewer, bmctl_operator, bmctl_shepherd, bmctl_endpoint',
                upper(g.object_kind), g.object_name);
        END IF;
        FOREACH r IN ARRAY ARRAY['viewer', 'operator', 'shepherd', 'endpoint'] LOOP
            privs := CASE r WHEN 'viewer' THEN g.viewer WHEN 'operator' THEN g.operator
                WHEN 'shepherd' THEN g.shepherd ELSE g.endpoint END;
            IF cardinality(privs) > 0 THEN
                EXECUTE format('GRANT %s ON %s %s TO %I', array_to_string(privs, ', '),
                    upper(g.object_kind), g.object_name, 'bmctl_' || r);
            END IF;
        END LOOP;
    END LOOP;
    -- Anyone may learn what the roles need: a login without a role is told
    -- what it lacks rather than only that it may not look.
    GRANT SELECT ON schema_migrations, bmdb_grants TO PUBLIC;
    GRANT EXECUTE ON FUNCTION bmdb_missing_grants(text) TO PUBLIC;
    -- SECURITY DEFINER functions run as the owner: pin their search_path so
    -- a caller's objects (pg_temp included) cannot stand in for ours.
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = current_schema()::regnamespace AND p.prosecdef LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
    END LOOP;
END $$;

-- The decisions. Every role reads schema_migrations (the schema check) and
-- bmdb_grants (the start-up check), and change_listeners: the change
-- triggers' WHEN reads it whoever writes.
INSERT INTO bmdb_grants (object_kind, object_name, viewer, operator, shepherd, endpoint) VALUES
('table', 'schema_migrations',        '{SELECT}', '{SELECT}', '{SELECT}', '{SELECT}'),
('table', 'bmdb_grants',              '{SELECT}', '{SELECT}', '{SELECT}', '{SELECT}'),
('table', 'change_listeners',         '{SELECT,INSERT,UPDATE,DELETE}', '{SELECT,INSERT,UPDATE,DELETE}', '{SELECT}', '{SELECT}'),
('table', 'machines',                 '{SELECT}', '{SELECT,"UPDATE (machine_created_at)"}', '{SELECT,INSERT,DELETE,"UPDATE (machine_created_at)"}', '{}'),
('table', 'machine_provided',         '{SELECT}', '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}', '{}'),
('table', 'machine_agent_started',    '{SELECT}', '{SELECT,"UPDATE (agent_heartbeat_seen)"}', '{SELECT,INSERT,UPDATE,DELETE}', '{SELECT}'),
('table', 'machine_agent_heartbeat',  '{SELECT}', '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}', '{}'),
('table', 'machine_hardware_report',  '{SELECT}', '{SELECT}', '{SELECT,DELETE}', '{}'),
('table', 'machine_ssh_host_key',     '{SELECT}', '{SELECT,DELETE}', '{SELECT,INSERT,DELETE}', '{}'),
('table', 'machine_recovery_requested', '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}', '{SELECT,DELETE}', '{}'),
('table', 'sessions',                 '{SELECT}', '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}', '{}'),
('table', 'work',                     '{SELECT}', '{SELECT,DELETE,"UPDATE (work_cancel_requested_at, work_cancel_reason, work_cancel_actor)"}', '{SELECT,INSERT,UPDATE,DELETE}', '{}'),
('table', 'work_backoff',             '{SELECT}', '{SELECT,UPDATE,DELETE}', '{SELECT,INSERT,UPDATE,DELETE}', '{}'),
('table', 'work_history',             '{SELECT}', '{SELECT,INSERT}', '{SELECT,INSERT}', '{}'),
('table', 'work_history_prunes',      '{SELECT}', '{SELECT}', '{SELECT}', '{}'),
('table', 'machine_holds',            '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}', '{SELECT,DELETE}', '{}'),
('table', 'machine_attention',        '{SELECT}', '{SELECT,UPDATE,DELETE}', '{SELECT,INSERT,UPDATE,DELETE}', '{}'),
('table', 'breaker_overrides',        '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}', '{SELECT}', '{}'),
('table', 'heartbeat_observer',       '{SELECT}', '{SELECT}', '{SELECT}', '{SELECT,INSERT,UPDATE}'),
('table', 'heartbeat_observer_gaps',  '{SELECT}', '{SELECT}', '{SELECT}', '{SELECT,INSERT}'),
('table', 'shepherd_policies',        '{SELECT}', '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}', '{}'),
('table', 'breaker_states',           '{SELECT}', '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}', '{}'),
-- Kept by triggers on machine_provided, which the shepherd writes.
('table', 'machine_location_counts',  '{SELECT}', '{SELECT}', '{SELECT,INSERT,UPDATE,DELETE}', '{}'),
-- Identity sequences: inserting through the identity column needs no grant.
('sequence', 'work_history_work_history_id_seq', '{}', '{}', '{}', '{}'),
('sequence', 'heartbeat_observer_gaps_gap_id_seq', '{}', '{}', '{}', '{}'),
('sequence', 'work_history_prunes_prune_id_seq', '{}', '{}', '{}', '{}'),
-- Functions that run with the caller's rights: executing them grants nothing
-- the caller lacks, and writers' indexes and triggers call them.
('function', 'process_exclusion_group(process)',   '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'change_listened()',                  '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'bmdb_notify_change()',               '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'work_history_notify()',              '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'machine_provided_awaiting_agent()',  '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'machine_agent_started_flags()',      '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'machine_agent_heartbeat_flags()',    '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'work_history_append_only()',         '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'machine_location_counts_add(text,bigint)', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'machine_location_counts_inserted()', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'machine_location_counts_deleted()',  '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'machine_location_counts_moved()',    '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'work_claim_check(uuid,process)',     '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
('function', 'bmdb_missing_grants(text)',          '{EXECUTE}', '{EXECUTE}', '{EXECUTE}', '{EXECUTE}'),
-- Only the owner changes grants.
('function', 'bmdb_apply_roles()',                 '{}', '{}', '{}', '{}'),
-- The endpoint's only writes.
('function', 'bmdb_record_heartbeats(uuid[],bytea[])',        '{}', '{}', '{}', '{EXECUTE}'),
('function', 'bmdb_record_hardware_report(uuid,bytea,jsonb)', '{}', '{}', '{}', '{EXECUTE}');

SELECT bmdb_apply_roles();
