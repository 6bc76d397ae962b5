-- Functions planned with sequential scans off (0014) also plan whatever they
-- fire: the change-notification triggers' WHEN (change_listened) and their
-- functions, on whichever call in a connection comes first. A sequential scan
-- planned with enable_seqscan off costs at least 10^10, far above
-- jit_above_cost, so that plan JIT-compiled its expressions on every
-- execution. The plan stays cached for the connection: a connection whose
-- first write was a release spent about 15 ms of CPU on every later write to
-- work, work_backoff and work_history (measured: 0.6 ms releases became
-- 15 ms). Nothing these functions run is worth compiling.
ALTER FUNCTION work_history_newest(uuid) SET jit = off;
ALTER FUNCTION work_claim_verify(uuid, uuid, bigint) SET jit = off;
ALTER FUNCTION work_release(uuid, process, uuid, work_event, text, text, text, boolean) SET jit = off;
ALTER FUNCTION work_claim_check(uuid, process) SET jit = off;
