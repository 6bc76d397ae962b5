ALTER FUNCTION work_history_newest(uuid) RESET jit;
ALTER FUNCTION work_claim_verify(uuid, uuid, bigint) RESET jit;
ALTER FUNCTION work_release(uuid, process, uuid, work_event, text, text, text, boolean) RESET jit;
ALTER FUNCTION work_claim_check(uuid, process) RESET jit;
