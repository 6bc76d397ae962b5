DELETE FROM bmdb_grants WHERE object_kind = 'function'
    AND object_name IN ('work_history_newest(uuid)', 'work_claim_verify(uuid,uuid,bigint)',
                        'work_release(uuid,process,uuid,work_event,text,text,text,boolean)');
DROP FUNCTION work_release(uuid, process, uuid, work_event, text, text, text, boolean);
DROP FUNCTION work_claim_verify(uuid, uuid, bigint);
DROP FUNCTION work_history_newest(uuid);
ALTER FUNCTION work_claim_check(uuid, process) RESET enable_seqscan;
CREATE OR REPLACE FUNCTION process_exclusion_group(p process) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p::text
        WHEN 'ShepherdAccess' THEN 'shepherd'
        WHEN 'ShepherdAgentStart' THEN 'shepherd'
        WHEN 'ShepherdRecovery' THEN 'shepherd'
        ELSE p::text
    END
$$;
