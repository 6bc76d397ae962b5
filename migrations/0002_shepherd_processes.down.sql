-- PostgreSQL cannot drop enum values, so the type is rebuilt. Rows of the split
-- processes fold back into ShepherdAccess, the process they were split from;
-- where a machine has backoffs for more than one of them, the latest one is kept.
DELETE FROM work_backoff b
USING work_backoff o
WHERE b.machine_id = o.machine_id
  AND b.process <> o.process
  AND (b.backoff_until, b.process::text) < (o.backoff_until, o.process::text);

ALTER TYPE process RENAME TO process_split;
CREATE TYPE process AS ENUM ('ShepherdAccess');
ALTER TABLE work ALTER COLUMN process TYPE process USING 'ShepherdAccess'::process;
ALTER TABLE work_backoff ALTER COLUMN process TYPE process USING 'ShepherdAccess'::process;
ALTER TABLE work_history ALTER COLUMN process TYPE process USING 'ShepherdAccess'::process;
DROP TYPE process_split;
