DROP TABLE machine_recovery_requested;

-- PostgreSQL cannot drop an enum value: rebuild work_event without it. The
-- requests recorded in history go with it (the older schema cannot say them).
DELETE FROM work_history WHERE event = 'RecoveryRequested';
ALTER TYPE work_event RENAME TO work_event_0007;
CREATE TYPE work_event AS ENUM ('Started', 'Finished', 'Failed', 'Canceled', 'Lost', 'BackoffCleared');
ALTER TABLE work_history ALTER COLUMN event TYPE work_event USING event::text::work_event;
DROP TYPE work_event_0007;
