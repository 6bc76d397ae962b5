package fleet

import (
	"fmt"
	"strings"
)

// State is what is happening to a machine, derived in SQL from the candidate
// rules of pkg/bmdb (bmdb.ViewSQL): for the process the machine waits for
// (AgentStart until its agent started, then Recovery), the first condition
// of that process's rule that fails names the state; a machine that passes
// them all is in one of its process's candidate states (new for AgentStart;
// no_heartbeat, heartbeat_stale, recovery_requested for Recovery), exactly
// the machines the claim queries may pick under the same policy.
//
//   - agent_starting, recovering, accessing: AgentStart, Recovery or the
//     legacy ShepherdAccess process holds work on the machine.
//   - unprovided: no provided tag; no process acts on it.
//   - held: an operator's hold covers the machine (machine-wide, or for the
//     process it waits for).
//   - new: provided, no started agent: waiting for AgentStart.
//   - awaiting_heartbeat: agent started, no heartbeat yet, still within the
//     NoHeartbeatAfterStart threshold.
//   - healthy: the last heartbeat is within the StaleHeartbeat threshold.
//   - backed_off: the process the machine waits for has an unexpired
//     backoff on it.
//   - needs_attention: a needs-attention mark (the remediation budget is
//     exhausted), or Recovery's budget is used up and the mark is coming.
//   - observer_gap: stale, but no heartbeat endpoint has been watching for
//     the whole threshold (it or BMDB was down): the machine gets the full
//     threshold again.
//   - breaker_open: stale, but the circuit breaker of the fleet or of its
//     location is open.
//   - no_heartbeat, heartbeat_stale: agent silent since its start, or last
//     heartbeat too old: waiting for Recovery.
//   - recovery_requested: an operator asked for Recovery: waiting for it.
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
	StateHeld              State = "held"
	StateNeedsAttention    State = "needs_attention"
	StateObserverGap       State = "observer_gap"
	StateBreakerOpen       State = "breaker_open"
	StateRecoveryRequested State = "recovery_requested"
)

// States lists every state, in a stable order for tables and statistics:
// the machine's life from registration to health, then trouble, then the
// brakes.
var States = []State{
	StateUnprovided, StateNew, StateAgentStarting, StateAwaitingHeartbeat, StateHealthy,
	StateNoHeartbeat, StateHeartbeatStale, StateRecoveryRequested, StateRecovering, StateBackedOff, StateAccessing,
	StateHeld, StateNeedsAttention, StateObserverGap, StateBreakerOpen,
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
