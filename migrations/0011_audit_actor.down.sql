ALTER TABLE work DROP COLUMN work_cancel_requested_at,
                 DROP COLUMN work_cancel_reason,
                 DROP COLUMN work_cancel_actor;
DROP INDEX work_history_event_at;
ALTER TABLE work_history DROP COLUMN actor;
