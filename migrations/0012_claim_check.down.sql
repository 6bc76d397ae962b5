DROP FUNCTION work_claim_check(uuid, process);
ALTER TABLE work DROP COLUMN work_claim_seen;
