-- Roles are cluster-wide and other databases may use them: they stay, with
-- nothing granted in this database.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM bmdb_grants WHERE object_kind <> 'function' AND to_regclass(object_name) IS NOT NULL LOOP
        EXECUTE format('REVOKE ALL ON %s %s FROM bmctl_viewer, bmctl_operator, bmctl_shepherd, bmctl_endpoint',
            upper(g.object_kind), g.object_name);
    END LOOP;
    FOR g IN SELECT * FROM bmdb_grants WHERE object_kind = 'function' AND to_regprocedure(object_name) IS NOT NULL LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM bmctl_viewer, bmctl_operator, bmctl_shepherd, bmctl_endpoint', g.object_name);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', g.object_name);
    END LOOP;
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM bmctl_viewer, bmctl_operator, bmctl_shepherd, bmctl_endpoint', current_schema());
END $$;
DROP FUNCTION bmdb_apply_roles();
DROP FUNCTION bmdb_missing_grants(text);
DROP TABLE work_history_prunes;
DROP TRIGGER work_history_append_only ON work_history;
DROP FUNCTION work_history_append_only();
DROP FUNCTION bmdb_record_hardware_report(uuid, bytea, jsonb);
DROP FUNCTION bmdb_record_heartbeats(uuid[], bytea[]);
DROP TABLE bmdb_grants;
