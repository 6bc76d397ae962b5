DROP FUNCTION work_claim_check(uuid, uuid, bigint);
