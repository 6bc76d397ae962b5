DROP TABLE shepherd_policies;
DROP TABLE heartbeat_observer_gaps;
DROP TABLE heartbeat_observer;
DROP TRIGGER machine_location_counts_insert ON machine_provided;
DROP TRIGGER machine_location_counts_update ON machine_provided;
DROP TRIGGER machine_location_counts_delete ON machine_provided;
DROP FUNCTION machine_location_counts_inserted();
DROP FUNCTION machine_location_counts_deleted();
DROP FUNCTION machine_location_counts_moved();
DROP FUNCTION machine_location_counts_add(text, bigint);
DROP TABLE machine_location_counts;
DROP TABLE breaker_states;
DROP INDEX machine_provided_location;
DROP INDEX work_history_recovery_started;
DROP TABLE breaker_overrides;
DROP TABLE machine_attention;
DROP TABLE machine_holds;

-- PostgreSQL cannot drop an enum value: rebuild work_event without this
-- migration's. The events recorded with them go (the older schema cannot say them).
DELETE FROM work_history WHERE event IN ('HoldPlaced', 'HoldReleased', 'HoldExpired', 'AttentionMarked',
    'AttentionCleared', 'BreakerOverridden', 'CancelRequested', 'LockBroken', 'PowerAction');
ALTER TYPE work_event RENAME TO work_event_0010;
CREATE TYPE work_event AS ENUM ('Started', 'Finished', 'Failed', 'Canceled', 'Lost', 'BackoffCleared', 'RecoveryRequested');
ALTER TABLE work_history ALTER COLUMN event TYPE work_event USING event::text::work_event;
DROP TYPE work_event_0010;
