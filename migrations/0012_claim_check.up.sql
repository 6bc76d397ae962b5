-- A claim picks its machine from its statement's snapshot. If another session
-- claimed the same machine and ended that work (Finished, Failed: a fresh
-- backoff, an agent just started) after the snapshot but before the claim's
-- insert, the insert meets no conflicting work row and the claim would act
-- on eligibility that no longer holds. So the claim records the newest
-- history event of the machine its snapshot saw, and a second statement of
-- its transaction, which sees those commits, calls work_claim_check: any
-- event on the machine after that one, by anyone else, aborts the claim as a
-- serialization failure, and the claimer looks again. Both statements go in
-- one round trip.
ALTER TABLE work ADD COLUMN work_claim_seen bigint NOT NULL DEFAULT 0;

CREATE FUNCTION work_claim_check(claimer uuid, claimed process) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM work w JOIN work_history h ON h.machine_id = w.machine_id
               WHERE w.session_id = claimer AND w.process = claimed
               AND w.work_started_at = now() -- claimed by this transaction
               AND h.work_history_id > w.work_claim_seen
               AND h.session_id IS DISTINCT FROM claimer) THEN
        RAISE EXCEPTION 'a machine changed while % claimed it', claimed USING ERRCODE = '40001';
    END IF;
END $$;
