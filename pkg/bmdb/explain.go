package bmdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Explanation answers, for one machine and each process with a rule,
// whether the machine is a candidate now and why or why not, condition by
// condition: the same conditions the claim queries AND together, evaluated
// by the same SQL, under the policy the running shepherd recorded.
type Explanation struct {
	Machine   uuid.UUID        `json:"machine_id"`
	At        time.Time        `json:"at"`
	Policy    RecordedPolicy   `json:"policy"`
	Processes []ProcessVerdict `json:"processes"`
}

// ProcessVerdict is one process's answer.
type ProcessVerdict struct {
	Process   Process `json:"process"`
	Candidate bool    `json:"candidate"`
	// Reason is why it is a candidate, or the first failing condition's
	// detail.
	Reason     string            `json:"reason"`
	Conditions []ConditionResult `json:"conditions"`
	// NextEligible is when the machine becomes a candidate if nothing else
	// changes, where that is knowable: every failing condition ends by
	// itself at a known time. Now for a candidate.
	NextEligible *time.Time `json:"next_eligible"`
}

// ConditionResult is one condition of a rule for the machine.
type ConditionResult struct {
	Name   string `json:"name"`
	Holds  bool   `json:"holds"`
	Detail string `json:"detail"`
	// Until is, for a failing condition that ends by itself, when it will
	// hold.
	Until *time.Time `json:"until,omitempty"`
}

// facts are the values explain shows, read from the rules' joins.
type facts struct {
	id                                     uuid.UUID
	now                                    time.Time
	provided                               bool
	provider, providerID, location, status *string
	startedAt, heartbeatAt                 *time.Time

	workProcess, workDetail, workComponent, workHost *string
	workStarted, workDeadline                        *time.Time

	backoff map[string]*backoffFact // by alias: ba, br
	hold    map[string]*holdFact    // hall, ha, hr
	att     map[string]*attFact     // atta, attr

	reqAt *time.Time
	reqBy *string

	budgetUsed   int64
	budgetOldest *time.Time

	obsAlive, obsSince *time.Time
	obsGap             *float64

	fleet, loc breakerFact
	locScope   string
}

type backoffFact struct {
	until *time.Time
	cause *string
}

type holdFact struct {
	set           bool
	reason, actor *string
	until, placed *time.Time
}

type attFact struct {
	reason *string
	since  *time.Time
}

type breakerFact struct {
	open, tripped            *bool
	silent, machines, limit  *int64
	evaluated                *time.Time
	overrideUntil            *time.Time
	overrideActor, overrideR *string
}

// column is one SELECT item and where it is scanned to.
type column struct {
	sql  string
	dest any
}

func factColumns(f *facts) []column {
	f.backoff = map[string]*backoffFact{"ba": {}, "br": {}}
	f.hold = map[string]*holdFact{"hall": {}, "ha": {}, "hr": {}}
	f.att = map[string]*attFact{"atta": {}, "attr": {}}
	cols := []column{
		{"m.machine_id", &f.id}, {"now()", &f.now}, {"p.machine_id IS NOT NULL", &f.provided},
		{"p.provider", &f.provider}, {"p.provider_id", &f.providerID}, {"p.provider_location", &f.location}, {"p.provider_status", &f.status},
		{"s.agent_started_at", &f.startedAt}, {"h.agent_heartbeat_at", &f.heartbeatAt},
		{"w.process::text", &f.workProcess}, {"w.work_detail", &f.workDetail}, {"w.work_started_at", &f.workStarted},
		{"ws.session_component", &f.workComponent}, {"ws.session_host", &f.workHost}, {"ws.session_deadline", &f.workDeadline},
		{"req.recovery_requested_at", &f.reqAt}, {"req.recovery_requested_by", &f.reqBy},
		{"obs.observer_alive_at", &f.obsAlive}, {"obs.observer_since", &f.obsSince}, {"obs.observer_gap_seconds", &f.obsGap},
		{"'location:' || coalesce(p.provider_location, '')", &f.locScope},
	}
	for _, a := range []string{"ba", "br"} {
		b := f.backoff[a]
		cols = append(cols, column{a + ".backoff_until", &b.until}, column{a + ".backoff_cause", &b.cause})
	}
	for _, a := range []string{"hall", "ha", "hr"} {
		h := f.hold[a]
		cols = append(cols, column{a + ".machine_id IS NOT NULL", &h.set}, column{a + ".hold_reason", &h.reason},
			column{a + ".hold_actor", &h.actor}, column{a + ".hold_until", &h.until}, column{a + ".hold_placed_at", &h.placed})
	}
	for _, a := range []string{"atta", "attr"} {
		t := f.att[a]
		cols = append(cols, column{a + ".attention_reason", &t.reason}, column{a + ".attention_since", &t.since})
	}
	for _, b := range []struct {
		alias, over string
		f           *breakerFact
	}{{"bf", "ofl", &f.fleet}, {"bl", "oll", &f.loc}} {
		cols = append(cols, column{b.alias + ".breaker_open", &b.f.open}, column{b.alias + ".breaker_tripped", &b.f.tripped},
			column{b.alias + ".breaker_silent", &b.f.silent}, column{b.alias + ".breaker_machines", &b.f.machines},
			column{b.alias + ".breaker_limit", &b.f.limit}, column{b.alias + ".breaker_evaluated_at", &b.f.evaluated},
			column{b.over + ".override_until", &b.f.overrideUntil}, column{b.over + ".override_actor", &b.f.overrideActor},
			column{b.over + ".override_reason", &b.f.overrideR})
	}
	return cols
}

// budgetColumns: Recovery's attempts in the window since the last cleared
// mark, all of them (budgetUsedSQL stops at the budget), and the oldest,
// which frees the next slot.
func budgetColumns(q ruleParams, f *facts) []column {
	from := `FROM work_history bu
		WHERE bu.machine_id = m.machine_id AND bu.process = 'ShepherdRecovery' AND bu.event = 'Started'
		  AND bu.event_at > ` + ago(q.budgetWindow) + `
		  AND bu.event_at > coalesce((SELECT max(bc.event_at) FROM work_history bc
		      WHERE bc.machine_id = m.machine_id AND bc.process = 'ShepherdRecovery' AND bc.event = 'AttentionCleared'), '-infinity')`
	return []column{{"(SELECT count(*) " + from + ")", &f.budgetUsed}, {"(SELECT min(bu.event_at) " + from + ")", &f.budgetOldest}}
}

// explainQuery is every fact and every condition of every rule for the
// machines $1, and where each is scanned to.
func explainQuery(pol Policy, f *facts, holds [][]bool) (string, []any) {
	q := literalParams(pol)
	cols := append(factColumns(f), budgetColumns(q, f)...)
	for ri, r := range Rules {
		holds[ri] = make([]bool, len(r.Conditions))
		for ci, c := range r.Conditions {
			cols = append(cols, column{"coalesce(" + c.sql(q) + ", false)", &holds[ri][ci]})
		}
	}
	sel := make([]string, len(cols))
	dest := make([]any, len(cols))
	for i, c := range cols {
		sel[i], dest[i] = c.sql, c.dest
	}
	return `SELECT ` + strings.Join(sel, ",\n\t\t") + `
	FROM machines m` + allJoins(q) + `
	LEFT JOIN sessions ws ON ws.session_id = w.session_id
	LEFT JOIN breaker_overrides ofl ON ofl.breaker_scope = 'fleet' AND ofl.override_until > now()
	LEFT JOIN breaker_overrides oll ON oll.breaker_scope = 'location:' || coalesce(p.provider_location, '') AND oll.override_until > now()
	WHERE m.machine_id = ANY($1)
	ORDER BY m.machine_id`, dest
}

// ErrNoSuchMachine: no machine has this id.
var ErrNoSuchMachine = errors.New("no such machine")

// Explain explains machine under the recorded policy (CurrentPolicy), or
// returns ErrNoSuchMachine.
func Explain(ctx context.Context, db DBTX, machine uuid.UUID) (Explanation, error) {
	rp, err := CurrentPolicy(ctx, db)
	if err != nil {
		return Explanation{}, err
	}
	ex, err := ExplainMachines(ctx, db, rp, []uuid.UUID{machine})
	if err != nil {
		return Explanation{}, err
	}
	if len(ex) == 0 {
		return Explanation{}, fmt.Errorf("%w: %s", ErrNoSuchMachine, machine)
	}
	return ex[0], nil
}

// ExplainMachines explains the machines that exist among machines under
// rp, in id order.
func ExplainMachines(ctx context.Context, db DBTX, rp RecordedPolicy, machines []uuid.UUID) ([]Explanation, error) {
	pol := rp.Policy.WithDefaults()
	rp.Policy = pol
	var (
		f     facts
		holds = make([][]bool, len(Rules))
	)
	sql, dest := explainQuery(pol, &f, holds)
	rows, err := db.Query(ctx, sql, machines)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Explanation
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		ex := Explanation{Machine: f.id, At: f.now, Policy: rp}
		for ri, r := range Rules {
			ex.Processes = append(ex.Processes, verdict(r, &f, pol, holds[ri]))
		}
		out = append(out, ex)
	}
	return out, rows.Err()
}

// verdict renders one rule's conditions for the machine.
func verdict(r *Rule, f *facts, pol Policy, holds []bool) ProcessVerdict {
	v := ProcessVerdict{Process: r.Process, Candidate: true}
	knowable := true
	var next time.Time
	for i, c := range r.Conditions {
		res := explainCondition(c.Name, r, f, pol, holds[i])
		v.Conditions = append(v.Conditions, res)
		if res.Holds {
			continue
		}
		if v.Candidate {
			v.Reason = res.Detail
		}
		v.Candidate = false
		if res.Until == nil {
			knowable = false
		} else if res.Until.After(next) {
			next = *res.Until
		}
	}
	switch {
	case v.Candidate:
		now := f.now
		v.NextEligible = &now
		v.Reason = "candidate now: every condition holds"
		if r.Process == ProcessShepherdRecovery && f.reqAt != nil {
			v.Reason = "candidate now: recovery requested by " + deref(f.reqBy)
		}
	case knowable:
		v.NextEligible = &next
	}
	return v
}

// waived says a Recovery condition holds only because of a request.
const waived = "waived: an operator requested recovery"

func explainCondition(name string, r *Rule, f *facts, pol Policy, holds bool) ConditionResult {
	res := ConditionResult{Name: name, Holds: holds}
	recovery := r.Process == ProcessShepherdRecovery
	suffix := map[bool]string{true: "r", false: "a"}[recovery]
	at := func(t time.Time) string { return when(t, f.now) }
	th := pol.Thresholds
	switch name {
	case "no_shepherd_work":
		if holds {
			res.Detail = "no shepherd work on the machine"
			break
		}
		res.Detail = fmt.Sprintf("work held by %s@%s (%s, step %q, since %s)", deref(f.workComponent), deref(f.workHost),
			deref(f.workProcess), deref(f.workDetail), at(*f.workStarted))
		if f.workDeadline != nil {
			if f.workDeadline.After(f.now) {
				res.Detail += ", session alive, deadline " + at(*f.workDeadline)
			} else {
				res.Detail += ", session dead since " + at(*f.workDeadline) + ": the sweep frees it"
			}
		}
	case "provided":
		if holds {
			res.Detail = fmt.Sprintf("provided by %s as %s in %q (status %s)", deref(f.provider), deref(f.providerID), deref(f.location), deref(f.status))
		} else {
			res.Detail = "not provided: no provider has recorded this machine"
		}
	case "agent_not_started", "agent_started":
		if f.startedAt != nil {
			res.Detail = "agent started " + at(*f.startedAt)
		} else {
			res.Detail = "no agent started"
		}
		if !holds && name == "agent_not_started" {
			res.Detail += ": Recovery's turn, not AgentStart's"
		}
		if !holds && name == "agent_started" {
			res.Detail += ": AgentStart's turn, not Recovery's"
		}
	case "not_held":
		h := f.hold["hall"]
		if !h.set {
			h = f.hold["h"+suffix]
		}
		if holds || !h.set {
			res.Detail = "no hold"
			break
		}
		scope := "every process"
		if h != f.hold["hall"] {
			scope = string(r.Process)
		}
		res.Detail = fmt.Sprintf("held (%s) by %s: %q, placed %s, ", scope, deref(h.actor), deref(h.reason), at(*h.placed))
		if h.until != nil {
			res.Detail += "until " + at(*h.until)
			res.Until = h.until
		} else {
			res.Detail += "until released"
		}
	case "no_backoff":
		b := f.backoff["b"+suffix]
		if holds || b.until == nil {
			res.Detail = "no unexpired backoff"
			break
		}
		res.Detail = fmt.Sprintf("backoff until %s, cause: %s", at(*b.until), deref(b.cause))
		res.Until = b.until
	case "dead":
		switch {
		case f.reqAt != nil:
			res.Detail = fmt.Sprintf("recovery requested by %s %s", deref(f.reqBy), at(*f.reqAt))
		case f.heartbeatAt != nil:
			age := f.now.Sub(*f.heartbeatAt)
			if holds {
				res.Detail = fmt.Sprintf("last heartbeat %s ago, stale after %s", short(age), short(th.StaleHeartbeat))
			} else {
				stale := f.heartbeatAt.Add(th.StaleHeartbeat)
				res.Detail = fmt.Sprintf("heart-beating: last heartbeat %s ago, stale after %s (%s if none comes)", short(age), short(th.StaleHeartbeat), at(stale))
				res.Until = &stale
			}
		case f.startedAt != nil:
			age := f.now.Sub(*f.startedAt)
			if holds {
				res.Detail = fmt.Sprintf("no heartbeat since the agent started %s ago, allowed %s", short(age), short(th.NoHeartbeatAfterStart))
			} else {
				due := f.startedAt.Add(th.NoHeartbeatAfterStart)
				res.Detail = fmt.Sprintf("awaiting the first heartbeat: agent started %s ago, allowed %s (%s)", short(age), short(th.NoHeartbeatAfterStart), at(due))
				res.Until = &due
			}
		default:
			res.Detail = "no agent started"
		}
	case "no_attention":
		a := f.att["att"+suffix]
		switch {
		case a.reason == nil:
			res.Detail = "no needs-attention mark"
		case holds:
			res.Detail = waived + " (needs attention: " + deref(a.reason) + ")"
		default:
			res.Detail = fmt.Sprintf("needs attention since %s: %s (an operator clears it: bmctl attention clear)", at(*a.since), deref(a.reason))
		}
	case "within_budget":
		b := pol.Budget
		res.Detail = fmt.Sprintf("remediation budget %d of %d used in %s", f.budgetUsed, b.Attempts, short(b.Window))
		switch {
		case holds && f.budgetUsed >= int64(b.Attempts):
			res.Detail = waived + " (" + res.Detail + ")"
		case !holds && f.budgetOldest != nil:
			slot := f.budgetOldest.Add(b.Window)
			res.Detail += ", next slot " + at(slot)
			res.Until = &slot
		}
	case "observed":
		res.Detail = explainObserver(f, th, holds, &res)
	case "breaker_closed":
		res.Detail = explainBreaker(f, pol, holds)
	}
	return res
}

func explainObserver(f *facts, th RecoveryThresholds, holds bool, res *ConditionResult) string {
	if f.obsAlive == nil {
		if holds {
			return waived + " (no heartbeat endpoint has ever recorded itself alive)"
		}
		return "no heartbeat endpoint has ever recorded itself alive: staleness is not judged without one"
	}
	need := th.StaleHeartbeat
	if f.heartbeatAt == nil {
		need = th.NoHeartbeatAfterStart
	}
	gap := time.Duration(*f.obsGap * float64(time.Second))
	alive := f.now.Sub(*f.obsAlive) < gap
	d := fmt.Sprintf("heartbeat endpoint last wrote %s ago", short(f.now.Sub(*f.obsAlive)))
	switch {
	case !alive:
		d = fmt.Sprintf("no heartbeat endpoint alive and writing since %s (endpoint down or BMDB unreachable): that time does not count against the machine",
			when(*f.obsAlive, f.now))
	case f.now.Sub(*f.obsSince) <= need:
		full := f.obsSince.Add(need)
		d += fmt.Sprintf("; watching only since %s, after a gap: the machine gets the full %s, until %s", when(*f.obsSince, f.now), short(need), when(full, f.now))
		res.Until = &full
	default:
		d += fmt.Sprintf(", watching without a gap since %s (needs %s)", when(*f.obsSince, f.now), short(need))
	}
	if holds && (!alive || f.now.Sub(*f.obsSince) <= need) {
		return waived + " (" + d + ")"
	}
	return d
}

func explainBreaker(f *facts, pol Policy, holds bool) string {
	fb, lb := f.fleet, f.loc
	var parts []string
	switch {
	case fb.evaluated == nil:
		parts = append(parts, "fleet breaker never evaluated (no shepherd running Recovery?): counts as open")
	case f.now.Sub(*fb.evaluated) > pol.Breaker.MaxAge:
		parts = append(parts, fmt.Sprintf("breakers last evaluated %s, longer ago than %s (no shepherd evaluating?): count as open",
			when(*fb.evaluated, f.now), short(pol.Breaker.MaxAge)))
	default:
		parts = append(parts, breakerText("fleet", fb, pol.Breaker.MaxSilent, pol.Breaker.MaxSilentFraction, f.now))
	}
	loc := strings.TrimPrefix(f.locScope, "location:")
	if lb.open != nil {
		parts = append(parts, breakerText("location "+fmt.Sprintf("%q", loc), lb, pol.Breaker.LocationMaxSilent, pol.Breaker.LocationMaxSilentFraction, f.now))
	} else {
		parts = append(parts, fmt.Sprintf("location %q: no silent machines counted", loc))
	}
	d := strings.Join(parts, "; ")
	if holds && f.reqAt != nil && !(fb.open != nil && !*fb.open && (lb.open == nil || !*lb.open)) {
		return "passed: an operator requested recovery (" + d + ")"
	}
	return d
}

func breakerText(scope string, b breakerFact, absolute int, fraction float64, now time.Time) string {
	state := "closed"
	if *b.open {
		state = "open"
	} else if *b.tripped {
		state = "overridden"
	}
	d := fmt.Sprintf("%s breaker %s: %d of %d silent, max %d = max(%d, %g%% of %d)", scope, state, *b.silent, *b.machines, *b.limit,
		absolute, fraction*100, *b.machines)
	if b.overrideUntil != nil {
		d += fmt.Sprintf(", overridden by %s until %s: %q", deref(b.overrideActor), when(*b.overrideUntil, now), deref(b.overrideR))
	}
	return d
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// when is a time as explain shows it: UTC clock time and age.
func when(t, now time.Time) string {
	clock := t.UTC().Format("15:04:05")
	if t.UTC().Format("2006-01-02") != now.UTC().Format("2006-01-02") {
		clock = t.UTC().Format("2006-01-02 15:04:05")
	}
	if d := t.Sub(now); d >= 0 {
		return clock + " UTC (in " + short(d) + ")"
	}
	return clock + " UTC (" + short(now.Sub(t)) + " ago)"
}

// short is a duration to the second, without zero units: 5h, 3m20s, 8s.
func short(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
