-- A claim picks its machine from its statement's snapshot. If another session
-- claimed the same machine and ended that work (Finished, Failed: a fresh
-- backoff, an agent just started) after the snapshot but before the claim's
-- insert, the insert meets no conflicting work row and the claim would act
-- on eligibility that no longer holds. The claim therefore calls this check
-- in a later statement of its transaction, which sees those commits: any
-- event on the machine after the newest one the claim saw, by anyone else,
-- aborts the claim as a serialization failure, and the claimer looks again.
CREATE FUNCTION work_claim_check(machine uuid, claimer uuid, seen bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM work_history
               WHERE machine_id = machine AND work_history_id > seen
               AND session_id IS DISTINCT FROM claimer) THEN
        RAISE EXCEPTION 'machine % changed while it was being claimed', machine USING ERRCODE = '40001';
    END IF;
END $$;
