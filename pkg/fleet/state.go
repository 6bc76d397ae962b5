package fleet

import (
	"fmt"
	"strings"
)

// State is what is happening to a machine, derived in SQL from its tags, its
// shepherd work and its backoffs (see stateSQL). Exactly one applies, checked
// in this order:
//
//   - agent_starting: AgentStart holds work on the machine.
//   - recovering: Recovery holds work on the machine.
//   - accessing: the legacy ShepherdAccess process holds work on it (an old
//     shepherd during a rolling upgrade).
//   - unprovided: no provided tag; no process acts on it.
//   - new: provided, no started agent: waiting for AgentStart.
//   - awaiting_heartbeat: agent started, no heartbeat yet, still within the
//     NoHeartbeatAfterStart threshold.
//   - healthy: the last heartbeat is within the StaleHeartbeat threshold.
//   - no_heartbeat: agent started longer than NoHeartbeatAfterStart ago and
//     never heart-beat: waiting for Recovery.
//   - heartbeat_stale: the last heartbeat is older than StaleHeartbeat:
//     waiting for Recovery.
//   - backed_off: the machine would be new, no_heartbeat or heartbeat_stale,
//     but the process that would act on it (AgentStart or Recovery) has an
//     unexpired backoff on it, so it waits for the backoff to end.
//
// The waiting states (new, no_heartbeat, heartbeat_stale) are exactly the
// machines the candidate queries of pkg/bmdb may pick, given the same
// thresholds.
type State string

const (
	StateAgentStarting     State = "agent_starting"
	StateRecovering        State = "recovering"
	StateAccessing         State = "accessing"
	StateUnprovided        State = "unprovided"
	StateNew               State = "new"
	StateAwaitingHeartbeat State = "awaiting_heartbeat"
	StateHealthy           State = "healthy"
	StateNoHeartbeat       State = "no_heartbeat"
	StateHeartbeatStale    State = "heartbeat_stale"
	StateBackedOff         State = "backed_off"
)

// States lists every state, in a stable order for tables and statistics:
// the machine's life from registration to health, then trouble.
var States = []State{
	StateUnprovided, StateNew, StateAgentStarting, StateAwaitingHeartbeat, StateHealthy,
	StateNoHeartbeat, StateHeartbeatStale, StateRecovering, StateBackedOff, StateAccessing,
}

// ParseState accepts a state name case-insensitively, with '-', '_' or ' '
// between words ("heartbeat-stale", "Backed off").
func ParseState(s string) (State, error) {
	norm := strings.NewReplacer("-", "_", " ", "_").Replace(strings.ToLower(strings.TrimSpace(s)))
	for _, st := range States {
		if norm == string(st) {
			return st, nil
		}
	}
	names := make([]string, len(States))
	for i, st := range States {
		names[i] = string(st)
	}
	return "", fmt.Errorf("unknown state %q (want one of %s)", s, strings.Join(names, ", "))
}

// stateSQL computes State over the joins of machineFrom; $1 and $2 are the
// NoHeartbeatAfterStart and StaleHeartbeat thresholds in seconds. It mirrors
// the candidate rules of pkg/bmdb (strict inequalities included).
const stateSQL = `CASE
		WHEN w.process = 'ShepherdAgentStart' THEN 'agent_starting'
		WHEN w.process = 'ShepherdRecovery' THEN 'recovering'
		WHEN w.process IS NOT NULL THEN 'accessing'
		WHEN p.machine_id IS NULL THEN 'unprovided'
		WHEN s.machine_id IS NULL THEN
			CASE WHEN ba.machine_id IS NULL THEN 'new' ELSE 'backed_off' END
		WHEN h.machine_id IS NULL AND s.agent_started_at >= now() - make_interval(secs => $1) THEN 'awaiting_heartbeat'
		WHEN h.agent_heartbeat_at >= now() - make_interval(secs => $2) THEN 'healthy'
		WHEN br.machine_id IS NOT NULL THEN 'backed_off'
		WHEN h.machine_id IS NULL THEN 'no_heartbeat'
		ELSE 'heartbeat_stale'
	END`
