-- Mutual exclusion of processes, enforced on every insert into work whoever the
-- writer is: at most one work item per (machine, exclusion group). A
-- select-time "no other work" check is not enough on READ COMMITTED: two
-- transactions of different processes can both see no work and both insert.
CREATE FUNCTION process_exclusion_group(p process) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p::text
        WHEN 'ShepherdAccess' THEN 'shepherd'
        WHEN 'ShepherdAgentStart' THEN 'shepherd'
        WHEN 'ShepherdRecovery' THEN 'shepherd'
        ELSE p::text
    END
$$;

CREATE UNIQUE INDEX work_exclusion ON work (machine_id, process_exclusion_group(process));
