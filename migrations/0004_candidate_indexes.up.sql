-- Candidate queries must cost what the eligible machines cost, not what the
-- fleet costs. In steady state nearly every machine has a started agent and a
-- fresh heartbeat, so an anti-join over all machines walks the whole fleet to
-- find a few. Triggers keep small flags beside the tags so that partial indexes
-- hold only the machines that may be eligible; the candidate queries still
-- check the tags themselves.

-- AgentStart: provided machines without a started agent.
ALTER TABLE machine_provided ADD COLUMN awaiting_agent boolean NOT NULL DEFAULT true;
UPDATE machine_provided p SET awaiting_agent = false
WHERE EXISTS (SELECT 1 FROM machine_agent_started s WHERE s.machine_id = p.machine_id);
CREATE INDEX machine_provided_awaiting_agent ON machine_provided (machine_id) WHERE awaiting_agent;

-- Recovery, rule 1: started agents that never heart-beat.
ALTER TABLE machine_agent_started ADD COLUMN agent_heartbeat_seen boolean NOT NULL DEFAULT false;
UPDATE machine_agent_started s SET agent_heartbeat_seen = true
WHERE EXISTS (SELECT 1 FROM machine_agent_heartbeat h WHERE h.machine_id = s.machine_id);
CREATE INDEX machine_agent_started_silent ON machine_agent_started (agent_started_at) WHERE NOT agent_heartbeat_seen;

-- Recovery, rule 2: stale heartbeats. Heartbeats arrive thousands of times a
-- second; an index on their exact time would make each one a non-HOT update
-- and fill the index with dead entries right where the stale query reads. The
-- index is on a coarse copy that moves at most once a minute (it is never
-- later than the exact time, so a range scan on it finds every stale machine),
-- and fillfactor leaves room on each page for HOT updates of the exact time.
ALTER TABLE machine_agent_heartbeat SET (fillfactor = 50);
ALTER TABLE machine_agent_heartbeat ADD COLUMN agent_heartbeat_coarse_at timestamptz;
UPDATE machine_agent_heartbeat SET agent_heartbeat_coarse_at = agent_heartbeat_at;
ALTER TABLE machine_agent_heartbeat ALTER COLUMN agent_heartbeat_coarse_at SET NOT NULL;
CREATE INDEX machine_agent_heartbeat_coarse ON machine_agent_heartbeat (agent_heartbeat_coarse_at);

CREATE FUNCTION machine_provided_awaiting_agent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.awaiting_agent := NOT EXISTS (SELECT 1 FROM machine_agent_started s WHERE s.machine_id = NEW.machine_id);
    RETURN NEW;
END $$;
CREATE TRIGGER machine_provided_awaiting_agent BEFORE INSERT ON machine_provided
FOR EACH ROW EXECUTE FUNCTION machine_provided_awaiting_agent();

CREATE FUNCTION machine_agent_started_flags() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.agent_heartbeat_seen := EXISTS (SELECT 1 FROM machine_agent_heartbeat h WHERE h.machine_id = NEW.machine_id);
        UPDATE machine_provided SET awaiting_agent = false WHERE machine_id = NEW.machine_id AND awaiting_agent;
        RETURN NEW;
    END IF;
    UPDATE machine_provided SET awaiting_agent = true WHERE machine_id = OLD.machine_id AND NOT awaiting_agent;
    RETURN OLD;
END $$;
CREATE TRIGGER machine_agent_started_flags BEFORE INSERT OR DELETE ON machine_agent_started
FOR EACH ROW EXECUTE FUNCTION machine_agent_started_flags();

CREATE FUNCTION machine_agent_heartbeat_flags() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE machine_agent_started SET agent_heartbeat_seen = false WHERE machine_id = OLD.machine_id AND agent_heartbeat_seen;
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.agent_heartbeat_coarse_at := NEW.agent_heartbeat_at;
        UPDATE machine_agent_started SET agent_heartbeat_seen = true WHERE machine_id = NEW.machine_id AND NOT agent_heartbeat_seen;
    ELSIF NEW.agent_heartbeat_at < OLD.agent_heartbeat_coarse_at
       OR NEW.agent_heartbeat_at - OLD.agent_heartbeat_coarse_at >= interval '1 minute' THEN
        NEW.agent_heartbeat_coarse_at := NEW.agent_heartbeat_at;
    ELSE
        NEW.agent_heartbeat_coarse_at := OLD.agent_heartbeat_coarse_at;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER machine_agent_heartbeat_flags BEFORE INSERT OR UPDATE OR DELETE ON machine_agent_heartbeat
FOR EACH ROW EXECUTE FUNCTION machine_agent_heartbeat_flags();
