-- Operator actions (pkg/ops) record who did them. Component writes (claims,
-- releases, the sweep) leave actor NULL: their actor is the session that did
-- them, which history readers show as session_component || '@' || session_host
-- (COALESCE(actor, ...)), so those write paths need not change.
ALTER TABLE work_history ADD COLUMN actor text;

-- `bmctl history --all --since 1h` reads a time range of the whole fleet's
-- history. Events are appended in time order, so a BRIN index finds the range
-- for a few pages of index and costs the appends (every claim and release)
-- almost nothing, where a b-tree would add an index entry to each.
CREATE INDEX work_history_event_at ON work_history USING brin (event_at);

-- `bmctl work cancel`: an operator asks the live session holding a work item
-- to cancel it. The holder notices through its session renewal (the shepherd
-- reads these columns for the work it holds) and ends the work with Canceled;
-- the request itself is a CancelRequested event in history. A work item
-- whose session is dead (past its deadline) is not asked: its lock is broken
-- (the row deleted) with a LockBroken event.
--   work_cancel_requested_at: when the cancel was asked for; NULL: not asked
--   work_cancel_reason:       the operator's reason ('' when none given)
--   work_cancel_actor:        who asked, "user@host" or --as
ALTER TABLE work ADD COLUMN work_cancel_requested_at timestamptz,
                 ADD COLUMN work_cancel_reason text,
                 ADD COLUMN work_cancel_actor text;
