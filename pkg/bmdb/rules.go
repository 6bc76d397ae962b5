package bmdb

import (
	"strconv"
	"strings"
)

// The candidate rules, each defined once as a list of named conditions.
// Each condition is a boolean SQL expression over the machine's row in a
// fixed set of joins (the aliases below); from the list come:
//
//   - the claim and candidate queries (every condition ANDed, over a small
//     driving set read from a partial index; see candidates.go),
//   - the state a view shows (the first condition that fails names it; see
//     StateSQL, used by pkg/fleet),
//   - explain (every condition evaluated for one machine; see explain.go).
//
// The joins, all LEFT JOINs keyed by m.machine_id, at most one row each:
//
//	m     machines                    p    machine_provided
//	s     machine_agent_started       h    machine_agent_heartbeat
//	w     shepherd work (any process of the shepherd's exclusion group)
//	ba/br unexpired AgentStart/Recovery backoff
//	hall  active machine-wide hold    ha/hr active AgentStart/Recovery hold
//	atta/attr AgentStart/Recovery needs-attention mark
//	req   operator's recovery request obs  the heartbeat observer (one row)
//	bf/bl the fleet's and the machine's location's breaker state
//
// A condition's SQL must not be NULL where it matters: claims use it as a
// WHERE conjunct (NULL excludes, as false would), views and explain wrap it
// in coalesce(..., false). Claims see the bare conjuncts so that the planner
// turns "x.machine_id IS NULL" into an anti-join.

// Condition is one named part of a candidate rule.
type Condition struct {
	// Name is stable: explain's JSON and tests use it.
	Name string
	// Doc says what the condition asks, in a few words.
	Doc string
	sql func(q ruleParams) string
	// failState is the state a view shows for a machine whose first
	// failing condition, among its process's, is this one; "" where a
	// view's CASE never gets there (its branch chose the other process).
	failState func(q ruleParams) string
	joins     []string
}

// Rule is a process's candidate rule: a machine is a candidate exactly when
// every condition holds.
type Rule struct {
	Process    Process
	Conditions []Condition
	// passState is the state of a candidate.
	passState func(q ruleParams) string
}

// ruleParams are the policy's numbers as SQL: literals for claims and
// explain, parameters ($1, $2) for the views, which pass thresholds as
// arguments. bound, if set, adds the random-start bound of AgentStart's
// search to a join on alias.
type ruleParams struct {
	noHeartbeat, stale string // seconds
	budgetAttempts     string
	budgetWindow       string // seconds
	breakerMaxAge      string // seconds
	bound              func(alias string) string
	// key is the column the joins are keyed on: m.machine_id, unless the
	// query drives from another table with no machines join.
	key string
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// literalParams writes every number of pol into the SQL: a claim's statement
// is then planned once per connection.
func literalParams(pol Policy) ruleParams {
	pol = pol.WithDefaults()
	return ruleParams{
		noHeartbeat:    num(pol.Thresholds.NoHeartbeatAfterStart.Seconds()),
		stale:          num(pol.Thresholds.StaleHeartbeat.Seconds()),
		budgetAttempts: strconv.Itoa(pol.Budget.Attempts),
		budgetWindow:   num(pol.Budget.Window.Seconds()),
		breakerMaxAge:  num(pol.Breaker.MaxAge.Seconds()),
	}
}

// ViewParams are literalParams with the two thresholds as $1 and $2
// (seconds), as pkg/fleet's queries pass them.
func viewParams(pol Policy) ruleParams {
	q := literalParams(pol)
	q.noHeartbeat, q.stale = "$1", "$2"
	return q
}

func ago(secs string) string { return "now() - make_interval(secs => " + secs + ")" }

// joinSQL is each alias's join; keyed aliases take the bound.
var joinSQL = map[string]func(q ruleParams) string{
	"p":    keyed("machine_provided p", "p", ""),
	"s":    keyed("machine_agent_started s", "s", ""),
	"h":    keyed("machine_agent_heartbeat h", "h", ""),
	"w":    keyed("work w", "w", "process_exclusion_group(w.process) = 'shepherd'"),
	"ba":   keyed("work_backoff ba", "ba", "ba.process = 'ShepherdAgentStart' AND ba.backoff_until > now()"),
	"br":   keyed("work_backoff br", "br", "br.process = 'ShepherdRecovery' AND br.backoff_until > now()"),
	"hall": keyed("machine_holds hall", "hall", "hall.process IS NULL AND (hall.hold_until IS NULL OR hall.hold_until > now())"),
	"ha":   keyed("machine_holds ha", "ha", "ha.process = 'ShepherdAgentStart' AND (ha.hold_until IS NULL OR ha.hold_until > now())"),
	"hr":   keyed("machine_holds hr", "hr", "hr.process = 'ShepherdRecovery' AND (hr.hold_until IS NULL OR hr.hold_until > now())"),
	"atta": keyed("machine_attention atta", "atta", "atta.process = 'ShepherdAgentStart'"),
	"attr": keyed("machine_attention attr", "attr", "attr.process = 'ShepherdRecovery'"),
	"req":  keyed("machine_recovery_requested req", "req", ""),
	"obs":  func(ruleParams) string { return "LEFT JOIN heartbeat_observer obs ON true" },
	"bf":   func(ruleParams) string { return "LEFT JOIN breaker_states bf ON bf.breaker_scope = 'fleet'" },
	"bl": func(ruleParams) string {
		return "LEFT JOIN breaker_states bl ON bl.breaker_scope = 'location:' || coalesce(p.provider_location, '')"
	},
}

// joinOrder is the order joins are written in: with more joins than
// join_collapse_limit the planner keeps it, so the cheap, selective ones
// come first. bl needs p.
var joinOrder = []string{"p", "s", "h", "w", "ba", "br", "hall", "ha", "hr", "atta", "attr", "req", "obs", "bf", "bl"}

func keyed(table, alias, cond string) func(q ruleParams) string {
	return func(q ruleParams) string {
		key := q.key
		if key == "" {
			key = "m.machine_id"
		}
		on := alias + ".machine_id = " + key
		if cond != "" {
			on += " AND " + cond
		}
		if q.bound != nil {
			on += q.bound(alias)
		}
		return "LEFT JOIN " + table + " ON " + on
	}
}

// joins writes the joins of aliases (in joinOrder, each once), skipping
// those in skip (the driving table already names them).
func joins(q ruleParams, aliases []string, skip ...string) string {
	want := map[string]bool{}
	for _, a := range aliases {
		want[a] = true
	}
	for _, a := range skip {
		delete(want, a)
	}
	var b strings.Builder
	for _, a := range joinOrder {
		if want[a] {
			b.WriteString("\n\t\t")
			b.WriteString(joinSQL[a](q))
		}
	}
	return b.String()
}

// allJoins is every alias, for views and explain.
func allJoins(q ruleParams) string { return joins(q, joinOrder) }

// The conditions. Several appear in both rules.
var (
	condNoShepherdWork = Condition{
		Name: "no_shepherd_work", Doc: "no shepherd process holds work on the machine",
		sql: func(ruleParams) string { return "w.machine_id IS NULL" },
		failState: func(ruleParams) string {
			return "CASE w.process WHEN 'ShepherdAgentStart' THEN 'agent_starting' WHEN 'ShepherdRecovery' THEN 'recovering' ELSE 'accessing' END"
		},
		joins: []string{"w"},
	}
	condProvided = Condition{
		Name: "provided", Doc: "the machine exists at a provider",
		sql:       func(ruleParams) string { return "p.machine_id IS NOT NULL" },
		failState: func(ruleParams) string { return "'unprovided'" },
		joins:     []string{"p"},
	}
	condAgentNotStarted = Condition{
		Name: "agent_not_started", Doc: "no agent has been started on the machine",
		sql:       func(ruleParams) string { return "s.machine_id IS NULL" },
		failState: nil, // the view turns to Recovery's rule
		joins:     []string{"s"},
	}
	condAgentStarted = Condition{
		Name: "agent_started", Doc: "an agent has been started on the machine",
		sql:   func(ruleParams) string { return "s.machine_id IS NOT NULL" },
		joins: []string{"s"},
	}
)

func condNotHeld(alias string) Condition {
	return Condition{
		Name: "not_held", Doc: "no operator's hold covers the machine for this process",
		sql:       func(ruleParams) string { return "hall.machine_id IS NULL AND " + alias + ".machine_id IS NULL" },
		failState: func(ruleParams) string { return "'held'" },
		joins:     []string{"hall", alias},
	}
}

func condNoBackoff(alias string) Condition {
	return Condition{
		Name: "no_backoff", Doc: "no unexpired backoff of this process on the machine",
		sql:       func(ruleParams) string { return alias + ".machine_id IS NULL" },
		failState: func(ruleParams) string { return "'backed_off'" },
		joins:     []string{alias},
	}
}

// requested waives a Recovery condition: an operator asked for Recovery.
func requested(cond string) string { return "(req.machine_id IS NOT NULL OR " + cond + ")" }

// AgentStartRule: provided, no started agent, no shepherd work, not held,
// no unexpired AgentStart backoff, no needs-attention mark.
var AgentStartRule = Rule{
	Process: ProcessShepherdAgentStart,
	Conditions: []Condition{
		condNoShepherdWork,
		condProvided,
		condAgentNotStarted,
		condNotHeld("ha"),
		condNoBackoff("ba"),
		{
			Name: "no_attention", Doc: "no needs-attention mark for this process",
			sql:       func(ruleParams) string { return "atta.machine_id IS NULL" },
			failState: func(ruleParams) string { return "'needs_attention'" },
			joins:     []string{"atta"},
		},
	},
	passState: func(ruleParams) string { return "'new'" },
}

// silentSQL: the agent never heart-beat, longer than the threshold since
// its start. staleSQL: its last heartbeat is older than the threshold.
func silentSQL(q ruleParams) string {
	return "(h.machine_id IS NULL AND s.agent_started_at < " + ago(q.noHeartbeat) + ")"
}
func staleSQL(q ruleParams) string { return "h.agent_heartbeat_at < " + ago(q.stale) }

// budgetUsedSQL counts Recovery's attempts on the machine in the window,
// since the last time an operator cleared its attention mark (a cleared
// mark is a fresh budget), up to the budget.
func budgetUsedSQL(q ruleParams) string {
	return `(SELECT count(*) FROM (SELECT 1 FROM work_history bu
		WHERE bu.machine_id = m.machine_id AND bu.process = 'ShepherdRecovery' AND bu.event = 'Started'
		  AND bu.event_at > ` + ago(q.budgetWindow) + `
		  AND bu.event_at > coalesce((SELECT max(bc.event_at) FROM work_history bc
		      WHERE bc.machine_id = m.machine_id AND bc.process = 'ShepherdRecovery' AND bc.event = 'AttentionCleared'), '-infinity')
		LIMIT ` + q.budgetAttempts + `) bu)`
}

// observedSQL: a heartbeat endpoint is alive and writing now, and has been
// without a gap for the threshold that applies to the machine.
func observedSQL(q ruleParams) string {
	return "(obs.observer_alive_at > now() - make_interval(secs => obs.observer_gap_seconds)" +
		" AND obs.observer_since < " + ago("CASE WHEN h.machine_id IS NULL THEN "+q.noHeartbeat+" ELSE "+q.stale+" END") + ")"
}

// breakerClosedSQL: the fleet's breaker was evaluated recently and is
// closed, and so is the machine's location's (no row: closed).
func breakerClosedSQL(q ruleParams) string {
	return "(bf.breaker_evaluated_at > " + ago(q.breakerMaxAge) + " AND NOT bf.breaker_open AND bl.breaker_open IS NOT TRUE)"
}

// RecoveryRule: provided, agent started, no shepherd work, not held, no
// unexpired Recovery backoff, and either an operator's request or: silent
// or stale, no needs-attention mark, within the remediation budget,
// observed long enough, breakers closed.
var RecoveryRule = Rule{
	Process: ProcessShepherdRecovery,
	Conditions: []Condition{
		condNoShepherdWork,
		condProvided,
		condAgentStarted,
		condNotHeld("hr"),
		{
			Name: "dead", Doc: "heartbeat stale, or none since the start for too long (or an operator requested recovery)",
			sql: func(q ruleParams) string { return requested("(" + silentSQL(q) + " OR " + staleSQL(q) + ")") },
			failState: func(ruleParams) string {
				return "CASE WHEN attr.machine_id IS NOT NULL THEN 'needs_attention' WHEN h.machine_id IS NULL THEN 'awaiting_heartbeat' ELSE 'healthy' END"
			},
			joins: []string{"req", "s", "h", "attr"},
		},
		// After dead: a healthy machine with a leftover backoff is healthy.
		condNoBackoff("br"),
		{
			Name: "no_attention", Doc: "no needs-attention mark for Recovery (waived by a request)",
			sql:       func(ruleParams) string { return requested("attr.machine_id IS NULL") },
			failState: func(ruleParams) string { return "'needs_attention'" },
			joins:     []string{"req", "attr"},
		},
		{
			Name: "within_budget", Doc: "fewer Recovery attempts in the window than the budget (waived by a request)",
			sql:       func(q ruleParams) string { return requested(budgetUsedSQL(q) + " < " + q.budgetAttempts) },
			failState: func(ruleParams) string { return "'needs_attention'" },
			joins:     []string{"req"},
		},
		{
			Name: "observed", Doc: "a heartbeat endpoint has been alive and writing for the whole threshold (waived by a request)",
			sql:       func(q ruleParams) string { return requested(observedSQL(q)) },
			failState: func(ruleParams) string { return "'observer_gap'" },
			joins:     []string{"req", "h", "obs"},
		},
		{
			Name: "breaker_closed", Doc: "the fleet's and the location's circuit breakers are closed (passed by a request)",
			sql:       func(q ruleParams) string { return requested(breakerClosedSQL(q)) },
			failState: func(ruleParams) string { return "'breaker_open'" },
			joins:     []string{"req", "p", "bf", "bl"},
		},
	},
	passState: func(ruleParams) string {
		return "CASE WHEN req.machine_id IS NOT NULL THEN 'recovery_requested' WHEN h.machine_id IS NULL THEN 'no_heartbeat' ELSE 'heartbeat_stale' END"
	},
}

// Rules are the processes' rules, in the order a view applies them.
var Rules = []*Rule{&AgentStartRule, &RecoveryRule}

// RuleFor returns the rule of process, nil if it has none.
func RuleFor(p Process) *Rule {
	for _, r := range Rules {
		if r.Process == p {
			return r
		}
	}
	return nil
}

// aliases are the joins the rule's conditions read.
func (r *Rule) aliases() []string {
	var a []string
	for _, c := range r.Conditions {
		a = append(a, c.joins...)
	}
	return a
}

// where is every condition ANDed, bare (see the package comment), except
// that the condition named invert, if any, must fail instead.
func (r *Rule) where(q ruleParams, invert string) string {
	parts := make([]string, len(r.Conditions))
	for i, c := range r.Conditions {
		if c.Name == invert {
			parts[i] = "NOT coalesce(" + c.sql(q) + ", false)"
		} else {
			parts[i] = c.sql(q)
		}
	}
	return strings.Join(parts, "\n\t\t  AND ")
}

// chain is the rule's state: the fail state of the first failing condition,
// else the pass state; a condition without a fail state hands over to other.
func (r *Rule) chain(q ruleParams, other string) string {
	var b strings.Builder
	b.WriteString("CASE")
	for _, c := range r.Conditions {
		fail := other
		if c.failState != nil {
			fail = c.failState(q)
		} else if other == "" {
			continue
		}
		b.WriteString("\n\t\tWHEN NOT coalesce(" + c.sql(q) + ", false) THEN " + fail)
	}
	b.WriteString("\n\t\tELSE " + r.passState(q) + " END")
	return b.String()
}

// stateSQL is a machine's state over allJoins: AgentStart's rule, which
// hands machines with a started agent to Recovery's.
func stateSQL(q ruleParams) string {
	return AgentStartRule.chain(q, RecoveryRule.chain(q, ""))
}

// ViewSQL is what pkg/fleet derives its rows from: every rule join after
// "FROM machines m" and the state expression, for the policy pol with its
// two thresholds passed as $1 and $2 (seconds).
func ViewSQL(pol Policy) (joins, state string) {
	q := viewParams(pol)
	return allJoins(q), stateSQL(q)
}

// CandidateStates are the states of the machines each rule lets its process
// claim: a view shows a machine in one of them exactly when the claim query
// may return it.
var CandidateStates = map[Process][]string{
	ProcessShepherdAgentStart: {"new"},
	ProcessShepherdRecovery:   {"no_heartbeat", "heartbeat_stale", "recovery_requested"},
}
