package main

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// TestExplainReasons sets up one machine per reason explain can give, each
// in a fresh database with an observer and fresh closed breakers unless the
// case changes them, and checks `bmctl explain` in text and JSON: the
// verdict, the condition that fails first (or that the machine is a
// candidate), the detail's text, and when it next becomes eligible.
func TestExplainReasons(t *testing.T) {
	type setup func(f *fleetDB, id uuid.UUID)
	started := func(ago string) setup {
		return func(f *fleetDB, id uuid.UUID) {
			f.exec(`INSERT INTO machine_agent_started (machine_id, agent_started_at, agent_public_key) VALUES ($1, now() - $2::interval, '\x00')`, id, ago)
		}
	}
	beat := func(ago string) setup {
		return func(f *fleetDB, id uuid.UUID) {
			f.exec(`INSERT INTO machine_agent_heartbeat (machine_id, agent_heartbeat_at) VALUES ($1, now() - $2::interval)`, id, ago)
		}
	}
	stale := func(f *fleetDB, id uuid.UUID) { started("2 hours")(f, id); beat("20 minutes")(f, id) }
	all := func(ss ...setup) setup {
		return func(f *fleetDB, id uuid.UUID) {
			for _, s := range ss {
				s(f, id)
			}
		}
	}
	sqlSetup := func(sql string) setup { return func(f *fleetDB, id uuid.UUID) { f.exec(sql, id) } }
	cases := []struct {
		name    string
		process bmdb.Process
		setup   setup
		// fails is the first failing condition; "" for a candidate.
		fails string
		text  string
		// next: the verdict says when it becomes eligible.
		next bool
	}{
		{"new machine", bmdb.ProcessShepherdAgentStart, nil, "", "candidate now", true},
		{"unprovided", bmdb.ProcessShepherdAgentStart, sqlSetup(`DELETE FROM machine_provided WHERE machine_id = $1`), "provided", "not provided", false},
		{"work held", bmdb.ProcessShepherdAgentStart, func(f *fleetDB, id uuid.UUID) {
			s := f.session("shepherd-agentstart")
			f.exec(`INSERT INTO work (machine_id, session_id, process, work_detail) VALUES ($1, $2, 'ShepherdAgentStart', 'dialing')`, id, s.ID())
		}, "no_shepherd_work", `work held by shepherd-agentstart@`, false},
		{"agent started: Recovery's turn", bmdb.ProcessShepherdAgentStart, all(started("1 minute"), beat("1 second")), "agent_not_started", "Recovery's turn", false},
		{"no agent: AgentStart's turn", bmdb.ProcessShepherdRecovery, nil, "agent_started", "AgentStart's turn", false},
		{"held until released", bmdb.ProcessShepherdAgentStart,
			sqlSetup(`INSERT INTO machine_holds (machine_id, hold_reason, hold_actor) VALUES ($1, 'disk swap', 'alice@jump1')`),
			"not_held", `held (every process) by alice@jump1: "disk swap"`, false},
		{"held for a while", bmdb.ProcessShepherdRecovery, all(stale,
			sqlSetup(`INSERT INTO machine_holds (machine_id, process, hold_reason, hold_actor, hold_until) VALUES ($1, 'ShepherdRecovery', 'firmware', 'bob@jump2', now() + interval '2 hours')`)),
			"not_held", `held (ShepherdRecovery) by bob@jump2: "firmware"`, true},
		{"backed off", bmdb.ProcessShepherdAgentStart, sqlSetup(`INSERT INTO work_backoff VALUES ($1, 'ShepherdAgentStart', now() + interval '3 minutes', 'ssh: connection refused', 180)`),
			"no_backoff", "backoff until", true},
		{"heart-beating", bmdb.ProcessShepherdRecovery, all(started("1 hour"), beat("5 seconds")), "dead", "heart-beating: last heartbeat", true},
		{"awaiting the first heartbeat", bmdb.ProcessShepherdRecovery, started("5 minutes"), "dead", "awaiting the first heartbeat", true},
		{"stale", bmdb.ProcessShepherdRecovery, stale, "", "candidate now", true},
		{"never heart-beat", bmdb.ProcessShepherdRecovery, started("2 hours"), "", "candidate now", true},
		{"needs attention", bmdb.ProcessShepherdRecovery, all(stale,
			sqlSetup(`INSERT INTO machine_attention (machine_id, process, attention_reason) VALUES ($1, 'ShepherdRecovery', 'remediation budget exhausted')`)),
			"no_attention", "needs attention since", false},
		{"budget used up", bmdb.ProcessShepherdRecovery, all(stale, sqlSetup(`
			INSERT INTO work_history (machine_id, process, event, event_at)
			SELECT $1, 'ShepherdRecovery', 'Started', now() - n * interval '1 hour' FROM generate_series(1, 3) n`)),
			"within_budget", "remediation budget 3 of 3 used in 24h, next slot", true},
		{"observer silent", bmdb.ProcessShepherdRecovery, all(stale,
			sqlSetup(`UPDATE heartbeat_observer SET observer_alive_at = now() - interval '1 hour', observer_gap_seconds = 3 WHERE $1::uuid IS NOT NULL`)),
			"observed", "no heartbeat endpoint alive and writing since", false},
		{"observer back from a gap", bmdb.ProcessShepherdRecovery, all(stale,
			sqlSetup(`UPDATE heartbeat_observer SET observer_since = now() - interval '1 minute' WHERE $1::uuid IS NOT NULL`)),
			"observed", "watching only since", true},
		{"no observer ever", bmdb.ProcessShepherdRecovery, all(stale, sqlSetup(`DELETE FROM heartbeat_observer WHERE $1::uuid IS NOT NULL`)),
			"observed", "no heartbeat endpoint has ever recorded itself alive", false},
		{"breakers not evaluated", bmdb.ProcessShepherdRecovery, all(stale, sqlSetup(`DELETE FROM breaker_states WHERE $1::uuid IS NOT NULL`)),
			"breaker_closed", "fleet breaker never evaluated", false},
		{"fleet breaker open", bmdb.ProcessShepherdRecovery, all(stale,
			sqlSetup(`UPDATE breaker_states SET breaker_open = true, breaker_tripped = true, breaker_silent = 412, breaker_machines = 1000, breaker_limit = 100 WHERE breaker_scope = 'fleet' AND $1::uuid IS NOT NULL`)),
			"breaker_closed", "fleet breaker open: 412 of 1000 silent, max 100", false},
		{"location breaker open", bmdb.ProcessShepherdRecovery, all(stale,
			sqlSetup(`INSERT INTO breaker_states SELECT 'location:rack-a', true, true, 9, 10, 5, now(), now() WHERE $1::uuid IS NOT NULL`)),
			"breaker_closed", `location "rack-a" breaker open: 9 of 10 silent, max 5`, false},
		{"recovery requested", bmdb.ProcessShepherdRecovery, all(started("1 hour"), beat("1 second"),
			sqlSetup(`INSERT INTO machine_recovery_requested (machine_id, recovery_requested_by) VALUES ($1, 'carol@jump3')`)),
			"", "recovery requested by carol@jump3", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFleetDB(t)
			id := f.add("m-1", "rack-a")
			brakestest.Ready(t, f.conn.Pool, bmdb.DefaultPolicy())
			if c.setup != nil {
				c.setup(f, id)
			}
			var ex bmdb.Explanation
			decodeJSON(t, f.ok("explain", id.String(), "-o", "json"), &ex)
			var v *bmdb.ProcessVerdict
			for i := range ex.Processes {
				if ex.Processes[i].Process == c.process {
					v = &ex.Processes[i]
				}
			}
			if v == nil {
				t.Fatalf("no verdict for %s in %+v", c.process, ex)
			}
			if v.Candidate != (c.fails == "") {
				t.Fatalf("%s: candidate %v, want %v: %s", c.process, v.Candidate, c.fails == "", v.Reason)
			}
			var first *bmdb.ConditionResult
			for i := range v.Conditions {
				if !v.Conditions[i].Holds {
					first = &v.Conditions[i]
					break
				}
			}
			switch {
			case c.fails == "" && first != nil:
				t.Errorf("candidate, yet %s fails", first.Name)
			case c.fails != "" && (first == nil || first.Name != c.fails):
				t.Errorf("first failing condition %+v, want %s", first, c.fails)
			case c.fails != "" && !strings.Contains(first.Detail, c.text):
				t.Errorf("%s detail %q, want it to say %q", first.Name, first.Detail, c.text)
			case c.fails != "" && v.Reason != first.Detail:
				t.Errorf("reason %q, want the first failing condition's detail", v.Reason)
			case c.fails == "" && !strings.Contains(v.Reason, c.text):
				t.Errorf("reason %q, want it to say %q", v.Reason, c.text)
			}
			if (v.NextEligible != nil) != c.next {
				t.Errorf("next eligible %v, want one: %v", v.NextEligible, c.next)
			}
			if v.NextEligible != nil && c.fails != "" && !v.NextEligible.After(ex.At) {
				t.Errorf("next eligible %s, not after now %s", v.NextEligible, ex.At)
			}
			if ex.Policy.Policy.Thresholds != bmdb.DefaultRecoveryThresholds || !ex.Policy.Live && ex.Policy.Session == nil {
				t.Errorf("policy %+v, want the recorded one", ex.Policy)
			}

			// The text says the same (times move on between the two runs).
			text := f.ok("explain", id.String())
			verdict := shortProcess(string(c.process)) + ": not a candidate: "
			if v.Candidate {
				verdict = shortProcess(string(c.process)) + ": CANDIDATE: "
			}
			found := false
			for _, l := range strings.Split(text, "\n") {
				found = found || strings.HasPrefix(l, verdict) && strings.Contains(l, c.text)
			}
			if !found {
				t.Errorf("text lacks a line %q...%q:\n%s", verdict, c.text, text)
			}
			if c.fails != "" && !strings.Contains(text, "✗ "+c.fails) {
				t.Errorf("text does not mark %s failing:\n%s", c.fails, text)
			}
			if c.next && c.fails != "" && !strings.Contains(text, "next eligible: ") {
				t.Errorf("text does not say when it is next eligible:\n%s", text)
			}
		})
	}
}

// TestExplainBadInput: an unknown machine is one clear line and exit 1.
func TestExplainBadInput(t *testing.T) {
	f := newFleetDB(t)
	r := f.run("explain", "nosuchmachine")
	if r.code == 0 || strings.Count(strings.TrimSpace(r.err), "\n") != 0 || !strings.Contains(r.err, "nosuchmachine") {
		t.Errorf("exit %d, stderr %q: want one line naming the machine", r.code, r.err)
	}
}
