package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

// TestRulesAgree ties the three uses of the candidate rules together: on a
// generated fleet with every combination of the facts the conditions read
// (provided and where, agent tags, shepherd work, backoffs, holds, marks,
// requests, budget use), under every state of the observer and the
// breakers, the machines the claim queries return, the machines explain
// calls candidates and the machines the views show in a candidate state are
// the same, for both processes. Then the one-statement claim of AgentStart
// takes exactly its set.
func TestRulesAgree(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	db := conn.Pool
	sess := session(t, conn, "agreement")
	ids := generateFleet(t, conn, sess.ID())
	t.Logf("%d machines", len(ids))

	// Breaker states stay fresh for the whole test; one scenario ages them.
	closed := bmdb.Policy{Breaker: bmdb.BreakerPolicy{MaxSilentFraction: 1, LocationMaxSilentFraction: 1, MaxAge: time.Hour}}.WithDefaults()
	fleetOpen := closed
	fleetOpen.Breaker.MaxSilent, fleetOpen.Breaker.MaxSilentFraction = 0, 1e-9 // any silent machine opens it
	locOpen := closed
	locOpen.Breaker.LocationMaxSilent, locOpen.Breaker.LocationMaxSilentFraction = 0, 1e-9

	sqlExec := func(sql string) {
		t.Helper()
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	scenarios := []struct {
		name  string
		pol   bmdb.Policy
		setup func()
	}{
		{"breakers closed", closed, nil},
		{"fleet breaker open", fleetOpen, nil},
		{"location a's breaker open, b's overridden", locOpen, nil},
		{"breakers not evaluated lately", closed, func() {
			sqlExec(`UPDATE breaker_states SET breaker_evaluated_at = now() - interval '2 hours'`)
		}},
		{"observer back from a gap 15 minutes ago", closed, func() {
			sqlExec(`UPDATE heartbeat_observer SET observer_since = now() - interval '15 minutes'`)
		}},
		{"observer silent", closed, func() {
			sqlExec(`UPDATE heartbeat_observer SET observer_alive_at = now() - interval '1 hour', observer_gap_seconds = 5`)
		}},
		{"no observer ever", closed, func() { sqlExec(`DELETE FROM heartbeat_observer`) }},
	}
	// decisive[process][condition]: for some machine this is the first
	// condition that fails (the one its state and explain's reason name).
	decisive := map[bmdb.Process]map[string]bool{}
	counts := map[string]int{}
	for _, sc := range scenarios {
		sqlExec(`DELETE FROM breaker_overrides`)
		brakestest.Watched(t, db)
		if sc.name == "location a's breaker open, b's overridden" {
			sqlExec(`INSERT INTO breaker_overrides VALUES ('location:b', now() + interval '1 hour', 'test', 'tester@test')`)
		}
		pol := sc.pol
		brakestest.Breakers(t, db, pol)
		if sc.setup != nil {
			sc.setup()
		}
		claimed := map[bmdb.Process]map[uuid.UUID]bool{}
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			a, err := bmdb.AgentStartCandidates(ctx, tx, len(ids))
			if err != nil {
				return err
			}
			r, err := bmdb.RecoveryCandidates(ctx, tx, pol, len(ids))
			claimed[bmdb.ProcessShepherdAgentStart], claimed[bmdb.ProcessShepherdRecovery] = set(a), set(r)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		exs, err := bmdb.ExplainMachines(ctx, db, bmdb.RecordedPolicy{Policy: pol}, ids)
		if err != nil {
			t.Fatal(err)
		}
		if len(exs) != len(ids) {
			t.Fatalf("%s: explained %d machines, want %d", sc.name, len(exs), len(ids))
		}
		explained := map[bmdb.Process]map[uuid.UUID]bool{}
		for _, ex := range exs {
			for _, v := range ex.Processes {
				if explained[v.Process] == nil {
					explained[v.Process] = map[uuid.UUID]bool{}
				}
				if v.Candidate {
					explained[v.Process][ex.Machine] = true
				}
				for _, c := range v.Conditions {
					if !c.Holds {
						if decisive[v.Process] == nil {
							decisive[v.Process] = map[string]bool{}
						}
						decisive[v.Process][c.Name] = true
						break
					}
				}
			}
		}
		list, err := fleet.ListMachines(ctx, db, fleet.ListOptions{Policy: &pol})
		if err != nil {
			t.Fatal(err)
		}
		viewed := map[bmdb.Process]map[uuid.UUID]bool{}
		for p, states := range bmdb.CandidateStates {
			viewed[p] = map[uuid.UUID]bool{}
			for _, m := range list {
				if slices.Contains(states, string(m.State)) {
					viewed[p][m.ID] = true
				}
			}
		}
		for _, p := range []bmdb.Process{bmdb.ProcessShepherdAgentStart, bmdb.ProcessShepherdRecovery} {
			c, e, v := claimed[p], explained[p], viewed[p]
			t.Logf("%s, %s: %d candidates", sc.name, p, len(c))
			if !maps.Equal(c, e) || !maps.Equal(c, v) {
				t.Errorf("%s, %s: claim query %d machines, explain %d, views %d; they differ on %v",
					sc.name, p, len(c), len(e), len(v), differ(c, e, v))
			}
			if len(c) == 0 {
				t.Errorf("%s, %s: no candidates at all: the fleet covers too little", sc.name, p)
			}
			counts[sc.name+"/"+string(p)] = len(c)
		}
	}
	// Each brake takes candidates away (requested machines pass them all).
	all := counts["breakers closed/ShepherdRecovery"]
	for _, sc := range scenarios[1:] {
		if n := counts[sc.name+"/ShepherdRecovery"]; n >= all {
			t.Errorf("%s: %d Recovery candidates, want fewer than the %d with every brake released", sc.name, n, all)
		}
	}
	for _, r := range bmdb.Rules {
		for _, c := range r.Conditions {
			if !decisive[r.Process][c.Name] {
				t.Errorf("%s: %s is never the first condition to fail: the fleet does not cover it", r.Process, c.Name)
			}
		}
	}

	// The one-statement claim takes exactly AgentStart's set (under the
	// last scenario's state, which AgentStart does not read).
	var want map[uuid.UUID]bool
	if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		a, err := bmdb.AgentStartCandidates(ctx, tx, len(ids))
		want = set(a)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	got := map[uuid.UUID]bool{}
	for {
		w, err := sess.ClaimAgentStart(ctx)
		if errors.Is(err, bmdb.ErrNothingToDo) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[w.Machine] = true
	}
	if !maps.Equal(got, want) {
		t.Errorf("ClaimAgentStart claimed %d machines, the candidate query returns %d", len(got), len(want))
	}
}

func set(ids []uuid.UUID) map[uuid.UUID]bool {
	s := map[uuid.UUID]bool{}
	for _, id := range ids {
		s[id] = true
	}
	return s
}

// differ lists a few machines in some sets but not all.
func differ(sets ...map[uuid.UUID]bool) []string {
	var out []string
	all := map[uuid.UUID]bool{}
	for _, s := range sets {
		maps.Copy(all, s)
	}
	for id := range all {
		var in []bool
		for _, s := range sets {
			in = append(in, s[id])
		}
		if slices.Contains(in, false) {
			out = append(out, fmt.Sprintf("%s %v", fleet.ShortID(id), in))
		}
		if len(out) == 5 {
			break
		}
	}
	return out
}

// generateFleet inserts one machine per combination of the facts the rules
// read and returns their ids.
func generateFleet(t *testing.T, conn *bmdb.Conn, session uuid.UUID) []uuid.UUID {
	t.Helper()
	ctx := context.Background()
	var (
		ids                []uuid.UUID
		provided, locs     []string
		provIDs            []uuid.UUID
		started            []uuid.UUID
		startedAt          []string
		hbIDs              []uuid.UUID
		hbAgo              []string
		workIDs            []uuid.UUID
		workProc           []string
		boIDs              []uuid.UUID
		boProc             []string
		holdIDs            []uuid.UUID
		holdProc           []*string
		holdUntil          []string
		attIDs             []uuid.UUID
		attProc            []string
		reqIDs             []uuid.UUID
		histIDs            []uuid.UUID
		histEvent, histAgo []string
	)
	str := func(s string) *string { return &s }
	n := 0
	for _, prov := range []string{"a", "b", ""} { // location a, b; "" unprovided
		for tags := range 5 { // none, started 5m, started 1h silent, hb fresh, hb 20m
			for _, work := range []string{"", "ShepherdAgentStart", "ShepherdRecovery"} {
				for _, bo := range []string{"", "ShepherdAgentStart", "ShepherdRecovery"} {
					for hold := range 5 { // none, all, AgentStart, Recovery, all expired
						for _, att := range []string{"", "ShepherdRecovery", "ShepherdAgentStart"} {
							for req := range 2 {
								for budget := range 3 { // none, 3 in window, 3 then cleared
									if req == 1 && tags == 0 {
										continue // a request needs a started agent
									}
									id := uuid.New()
									n++
									ids = append(ids, id)
									if prov != "" {
										provIDs, provided, locs = append(provIDs, id), append(provided, fmt.Sprintf("m%d", n)), append(locs, prov)
									}
									switch tags {
									case 1:
										started, startedAt = append(started, id), append(startedAt, "5 minutes")
									case 2, 3, 4:
										started, startedAt = append(started, id), append(startedAt, "2 hours")
									}
									switch tags {
									case 3:
										hbIDs, hbAgo = append(hbIDs, id), append(hbAgo, "5 seconds")
									case 4:
										hbIDs, hbAgo = append(hbIDs, id), append(hbAgo, "20 minutes")
									}
									if work != "" {
										workIDs, workProc = append(workIDs, id), append(workProc, work)
									}
									if bo != "" {
										boIDs, boProc = append(boIDs, id), append(boProc, bo)
									}
									switch hold {
									case 1:
										holdIDs, holdProc, holdUntil = append(holdIDs, id), append(holdProc, nil), append(holdUntil, "1 hour")
									case 2:
										holdIDs, holdProc, holdUntil = append(holdIDs, id), append(holdProc, str("ShepherdAgentStart")), append(holdUntil, "")
									case 3:
										holdIDs, holdProc, holdUntil = append(holdIDs, id), append(holdProc, str("ShepherdRecovery")), append(holdUntil, "1 hour")
									case 4:
										holdIDs, holdProc, holdUntil = append(holdIDs, id), append(holdProc, nil), append(holdUntil, "-1 minute")
									}
									if att != "" {
										attIDs, attProc = append(attIDs, id), append(attProc, att)
									}
									if req == 1 {
										reqIDs = append(reqIDs, id)
									}
									if budget > 0 {
										for _, ago := range []string{"3 hours", "2 hours", "1 hour"} {
											histIDs, histEvent, histAgo = append(histIDs, id), append(histEvent, "Started"), append(histAgo, ago)
										}
									}
									if budget == 2 {
										histIDs, histEvent, histAgo = append(histIDs, id), append(histEvent, "AttentionCleared"), append(histAgo, "30 minutes")
									}
								}
							}
						}
					}
				}
			}
		}
	}
	stmts := []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO machines (machine_id) SELECT unnest($1::uuid[])`, []any{ids}},
		{`INSERT INTO machine_provided (machine_id, provider, provider_id, provider_location, provider_status)
			SELECT id, 'test', pid, loc, 'active' FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, pid, loc)`, []any{provIDs, provided, locs}},
		{`INSERT INTO machine_agent_started (machine_id, agent_started_at, agent_public_key)
			SELECT id, now() - ago::interval, '\x00' FROM unnest($1::uuid[], $2::text[]) AS u(id, ago)`, []any{started, startedAt}},
		{`INSERT INTO machine_agent_heartbeat (machine_id, agent_heartbeat_at)
			SELECT id, now() - ago::interval FROM unnest($1::uuid[], $2::text[]) AS u(id, ago)`, []any{hbIDs, hbAgo}},
		{`INSERT INTO work (machine_id, session_id, process)
			SELECT id, $3, p::process FROM unnest($1::uuid[], $2::text[]) AS u(id, p)`, []any{workIDs, workProc, session}},
		{`INSERT INTO work_backoff (machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds)
			SELECT id, p::process, now() + interval '1 hour', 'test', 60 FROM unnest($1::uuid[], $2::text[]) AS u(id, p)`, []any{boIDs, boProc}},
		{`INSERT INTO machine_holds (machine_id, process, hold_reason, hold_actor, hold_until)
			SELECT id, p::process, 'test', 'tester@test', CASE WHEN u = '' THEN NULL ELSE now() + u::interval END
			FROM unnest($1::uuid[], $2::text[], $3::text[]) AS x(id, p, u)`, []any{holdIDs, holdProc, holdUntil}},
		{`INSERT INTO machine_attention (machine_id, process, attention_reason)
			SELECT id, p::process, 'test' FROM unnest($1::uuid[], $2::text[]) AS u(id, p)`, []any{attIDs, attProc}},
		{`INSERT INTO machine_recovery_requested (machine_id, recovery_requested_by) SELECT unnest($1::uuid[]), 'tester@test'`, []any{reqIDs}},
		{`INSERT INTO work_history (machine_id, process, event, event_at)
			SELECT id, 'ShepherdRecovery', e::work_event, now() - ago::interval FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, e, ago)`,
			[]any{histIDs, histEvent, histAgo}},
	}
	for _, s := range stmts {
		if _, err := conn.Pool.Exec(ctx, s.sql, s.args...); err != nil {
			t.Fatalf("%s: %v", s.sql, err)
		}
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	return ids
}
