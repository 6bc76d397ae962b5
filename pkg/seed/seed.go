// Package seed fills BMDB with a synthetic fleet for benchmarks and demos:
// machines in the states a real fleet spends its life in (mostly healthy, a
// few new, stale, backed off or being worked on), with the work history that
// got them there. Rows are streamed with COPY, so a million machines take
// about a minute, not hours of row-by-row inserts.
package seed

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Profile says what share of the fleet is in which state.
type Profile struct {
	Name string
	// New is the share of machines provided but with no started agent:
	// AgentStart candidates.
	New float64
	// Stale is the share of machines with a started agent that needs
	// Recovery: a fifth never heart-beat within 30 minutes of the start, the
	// rest have a heartbeat older than 10 minutes.
	Stale float64
	// Backoff is how many machines sit in an unexpired backoff, half of them
	// AgentStart (among new machines), half Recovery (among stale ones).
	Backoff int
	// Working is how many machines hold active work under the seeding
	// session, half AgentStart, half Recovery.
	Working int
	// RecoveredShare is the share of healthy machines that went through a
	// Recovery once before (deeper history).
	RecoveredShare float64
}

// Steady is a fleet at rest: 99% healthy with fresh heartbeats, 0.5% new,
// 0.5% stale, a few hundred backed off and a shepherd's worth of work.
var Steady = Profile{Name: "steady", New: 0.005, Stale: 0.005, Backoff: 300, Working: 64, RecoveredShare: 0.2}

// Profiles are the named profiles of `bmctl dev seed --profile`.
var Profiles = map[string]Profile{Steady.Name: Steady}

// LookupProfile returns the named profile.
func LookupProfile(name string) (Profile, error) {
	if p, ok := Profiles[name]; ok {
		return p, nil
	}
	names := make([]string, 0, len(Profiles))
	for n := range Profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return Profile{}, fmt.Errorf("unknown profile %q (want one of: %s)", name, strings.Join(names, ", "))
}

// Options configure a seeding run.
type Options struct {
	Machines int
	Profile  Profile
	// Provider names the provider of the seeded machines; default "seed".
	Provider string
	// Seed makes the fleet reproducible; 0 picks one at random. Machine ids
	// derive from it, so seeding twice with one Seed into one database fails.
	Seed uint64
	// WorkTTL is how long the seeding session (and so its active work) lives;
	// nothing keeps it alive, so the sweep records the work as lost after it.
	// Default one hour.
	WorkTTL time.Duration
}

// Result counts what was seeded, by state.
type Result struct {
	Machines, Healthy, New, Stale, Silent int
	AgentStartBackoff, RecoveryBackoff    int
	AgentStartWork, RecoveryWork          int
	History                               int
	Session                               uuid.UUID
	Elapsed                               time.Duration
}

type state uint8

const (
	healthy state = iota // agent started, fresh heartbeat
	fresh                // provided, no agent started
	stale                // agent started, heartbeat older than 10 min
	silent               // agent started over 30 min ago, never heart-beat
)

// role is what, beyond its state, is going on with a machine.
type role uint8

const (
	idle role = iota
	backedOff
	working
)

// Seeded tables, in the order they are filled (foreign keys first).
// Heartbeats come last and are dated by the clock when their copy starts, so
// that they are fresh when the load commits, however long it took.
var tables = []string{"machines", "machine_provided", "machine_agent_started", "work", "work_backoff", "work_history", "machine_agent_heartbeat"}

// Seed adds a fleet to the database in one transaction: all of it or none.
// The tables' own triggers are switched off for the load (it sets the flags
// they maintain itself, which is far faster than a trigger per row), and
// bmdb_change is notified once per table at the end.
func Seed(ctx context.Context, pool *pgxpool.Pool, opt Options) (Result, error) {
	start := time.Now()
	if opt.Machines < 1 {
		return Result{}, errors.New("seed needs at least one machine (--machines N)")
	}
	if opt.Provider == "" {
		opt.Provider = "seed"
	}
	if opt.WorkTTL <= 0 {
		opt.WorkTTL = time.Hour
	}
	if opt.Seed == 0 {
		opt.Seed = rand.Uint64() | 1
	}
	p := opt.Profile
	if p.New < 0 || p.Stale < 0 || p.New+p.Stale > 1 {
		return Result{}, fmt.Errorf("profile %q: new and stale shares must be between 0 and 1 together", p.Name)
	}

	g := newGen(opt)
	var res Result
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&g.now); err != nil {
			return err
		}
		for _, t := range tables {
			if _, err := tx.Exec(ctx, `ALTER TABLE `+t+` DISABLE TRIGGER USER`); err != nil {
				return fmt.Errorf("preparing %s for the load (seeding needs to own the tables): %w", t, err)
			}
		}
		err := tx.QueryRow(ctx, `
			INSERT INTO sessions (session_component, session_host, session_version, session_interval_seconds, session_deadline)
			VALUES ('seed', 'seed', 'seed', $1::int, now() + $1::int * interval '1 second')
			RETURNING session_id`, int(opt.WorkTTL.Round(time.Second)/time.Second)).Scan(&g.session)
		if err != nil {
			return err
		}
		if err := g.copyAll(ctx, tx); err != nil {
			return err
		}
		if err := brakesOf(ctx, tx); err != nil {
			return err
		}
		for _, t := range tables {
			if _, err := tx.Exec(ctx, `ALTER TABLE `+t+` ENABLE TRIGGER USER`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_notify('bmdb_change', $1)`, t); err != nil {
				return err
			}
		}
		res = g.result()
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("seeding: %w", err)
	}
	// Fresh statistics, so the planner knows the fleet's shape at once.
	for _, t := range tables {
		if _, err := pool.Exec(ctx, `ANALYZE `+t); err != nil {
			return Result{}, fmt.Errorf("analyzing %s: %w", t, err)
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// brakesOf sets what the brakes of the candidate rules read and the
// switched-off triggers would have: the machines per location (counted
// afresh), and a heartbeat observer that has watched the seeded fleet all
// along (and counts as alive for a day, so that a long benchmark needs no
// endpoint beside it).
func brakesOf(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `
		DELETE FROM machine_location_counts;
		INSERT INTO machine_location_counts SELECT coalesce(provider_location, ''), count(*) FROM machine_provided GROUP BY 1;
		INSERT INTO heartbeat_observer (observer_alive_at, observer_since, observer_gap_seconds, observer_host)
		VALUES (now(), now() - interval '1 day', 86400, 'seed')
		ON CONFLICT (observer_singleton) DO UPDATE SET observer_alive_at = excluded.observer_alive_at,
			observer_since = least(heartbeat_observer.observer_since, excluded.observer_since),
			observer_gap_seconds = excluded.observer_gap_seconds`)
	return err
}

// gen derives every machine from its index and the seed, so each table's
// stream can be generated independently without holding the fleet in memory.
type gen struct {
	opt     Options
	now     time.Time
	beatNow time.Time // the clock when heartbeats are copied
	session uuid.UUID
	states  []state
	roles   []role
	history int
	eras    []uuid.UUID // past shepherd sessions that wrote the history
}

func newGen(opt Options) *gen {
	n := opt.Machines
	g := &gen{opt: opt, states: make([]state, n), roles: make([]role, n)}
	r := rand.New(rand.NewPCG(opt.Seed, 0))
	// Exact counts per state, scattered over the fleet.
	nNew := int(float64(n)*opt.Profile.New + 0.5)
	nStale := int(float64(n)*opt.Profile.Stale + 0.5)
	nSilent := nStale / 5
	i := 0
	for ; i < nNew; i++ {
		g.states[i] = fresh
	}
	for j := 0; j < nStale-nSilent; j, i = j+1, i+1 {
		g.states[i] = stale
	}
	for j := 0; j < nSilent; j, i = j+1, i+1 {
		g.states[i] = silent
	}
	r.Shuffle(n, func(a, b int) { g.states[a], g.states[b] = g.states[b], g.states[a] })
	// Roles: work and backoff go to the machines their process is about.
	// Each gets at most a third of its pool so candidates remain.
	var news, stales []int
	for i, s := range g.states {
		switch s {
		case fresh:
			news = append(news, i)
		case stale, silent:
			stales = append(stales, i)
		}
	}
	assign := func(pool []int, backoff, work int) {
		// Scattered over the fleet, as failures of a mature fleet are.
		r.Shuffle(len(pool), func(a, b int) { pool[a], pool[b] = pool[b], pool[a] })
		backoff = min(backoff, len(pool)/3)
		work = min(work, len(pool)/3)
		for _, i := range pool[:backoff] {
			g.roles[i] = backedOff
		}
		for _, i := range pool[backoff : backoff+work] {
			g.roles[i] = working
		}
	}
	assign(news, opt.Profile.Backoff/2, opt.Profile.Working/2)
	assign(stales, opt.Profile.Backoff-opt.Profile.Backoff/2, opt.Profile.Working-opt.Profile.Working/2)
	for range 8 {
		g.eras = append(g.eras, uuidFrom(r))
	}
	return g
}

func uuidFrom(r *rand.Rand) uuid.UUID {
	var u uuid.UUID
	for i := 0; i < 16; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			u[i+j] = byte(v >> (8 * j))
		}
	}
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u
}

// machine is everything about one seeded machine.
type machine struct {
	id          uuid.UUID
	state       state
	role        role
	createdAt   time.Time
	startedAt   time.Time // agent start, when started
	heartbeatAt time.Time // last heartbeat, when it has one
	key         []byte
	recovered   bool // went through one Recovery before its current agent
	failures    int  // consecutive failures, when backed off
	failedAt    time.Time
	workAt      time.Time // when its active work started, when working
	era         uuid.UUID
	r           *rand.Rand
}

func (m *machine) process() bmdb.Process {
	if m.state == fresh {
		return bmdb.ProcessShepherdAgentStart
	}
	return bmdb.ProcessShepherdRecovery
}

func (m *machine) policy() bmdb.Backoff {
	if m.state == fresh {
		return bmdb.AgentStartBackoff
	}
	return bmdb.RecoveryBackoff
}

// backoffInterval is the interval after m.failures consecutive failures.
func (m *machine) backoffInterval() int64 {
	var iv int64
	for range m.failures {
		iv = m.policy().Next(iv)
	}
	return iv
}

func jitter(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
}

func (g *gen) machine(i int) machine {
	r := rand.New(rand.NewPCG(g.opt.Seed, uint64(i)+1))
	m := machine{id: uuidFrom(r), state: g.states[i], role: g.roles[i], r: r}
	m.era = g.eras[r.IntN(len(g.eras))]
	switch m.state {
	case fresh:
		m.createdAt = g.now.Add(-jitter(r, 4*time.Hour, 12*time.Hour))
	case silent:
		// Restarted agent that never came back: started well past the 30
		// minute threshold.
		m.startedAt = g.now.Add(-jitter(r, time.Hour, 6*time.Hour))
	default:
		m.startedAt = g.now.Add(-jitter(r, 2*time.Hour, 60*24*time.Hour))
	}
	if m.state != fresh {
		m.createdAt = m.startedAt.Add(-jitter(r, 5*time.Minute, 48*time.Hour))
		m.recovered = r.Float64() < g.opt.Profile.RecoveredShare
		key := make([]byte, ed25519.PublicKeySize)
		for j := range key {
			key[j] = byte(r.Uint32())
		}
		m.key = key
	}
	switch m.state {
	case healthy:
		m.heartbeatAt = g.now.Add(-jitter(r, 0, 50*time.Second))
	case stale:
		m.heartbeatAt = g.now.Add(-jitter(r, 11*time.Minute, 6*time.Hour))
	}
	switch m.role {
	case backedOff:
		// Up to a dozen failures: intervals long enough (Recovery up to
		// 7 min, AgentStart up to 37 min) that the backoffs still hold
		// while a benchmark or a demo looks at the fleet.
		m.failures = 1 + r.IntN(12)
		iv := time.Duration(m.backoffInterval()) * time.Second
		m.failedAt = g.now.Add(-jitter(r, 0, iv/2))
	case working:
		m.workAt = g.now.Add(-jitter(r, 0, time.Minute))
	}
	return m
}

func (g *gen) each(fn func(m *machine) ([][]any, error)) pgx.CopyFromSource {
	i := 0
	var pending [][]any
	return pgx.CopyFromFunc(func() ([]any, error) {
		for len(pending) == 0 {
			if i >= g.opt.Machines {
				return nil, nil
			}
			m := g.machine(i)
			i++
			rows, err := fn(&m)
			if err != nil {
				return nil, err
			}
			pending = rows
		}
		row := pending[0]
		pending = pending[1:]
		return row, nil
	})
}

func (g *gen) copyAll(ctx context.Context, tx pgx.Tx) error {
	copies := []struct {
		table string
		cols  []string
		rows  func(m *machine) ([][]any, error)
	}{
		{"machines", []string{"machine_id", "machine_created_at"}, func(m *machine) ([][]any, error) {
			return [][]any{{m.id, m.createdAt}}, nil
		}},
		{"machine_provided", []string{"machine_id", "provider", "provider_id", "provider_address", "provider_location", "provider_status", "awaiting_agent"},
			func(m *machine) ([][]any, error) {
				b := m.id[:]
				addr := fmt.Sprintf("10.%d.%d.%d:22", b[0], b[1], b[2])
				loc := fmt.Sprintf("dc%d-rack%02d", b[3]%4+1, b[4]%40+1)
				return [][]any{{m.id, g.opt.Provider, "sd-" + m.id.String()[:18], addr, loc, "active", m.state == fresh}}, nil
			}},
		{"machine_agent_started", []string{"machine_id", "agent_started_at", "agent_public_key", "agent_heartbeat_seen"}, func(m *machine) ([][]any, error) {
			if m.state == fresh {
				return nil, nil
			}
			return [][]any{{m.id, m.startedAt, m.key, m.state != silent}}, nil
		}},
		{"work", []string{"machine_id", "session_id", "process", "work_started_at", "work_detail"}, func(m *machine) ([][]any, error) {
			if m.role != working {
				return nil, nil
			}
			return [][]any{{m.id, g.session, string(m.process()), m.workAt, "dialing"}}, nil
		}},
		{"work_backoff", []string{"machine_id", "process", "backoff_until", "backoff_cause", "backoff_last_interval_seconds"}, func(m *machine) ([][]any, error) {
			if m.role != backedOff {
				return nil, nil
			}
			iv := m.backoffInterval()
			return [][]any{{m.id, string(m.process()), m.failedAt.Add(time.Duration(iv) * time.Second), failCause(m), iv}}, nil
		}},
		{"work_history", []string{"machine_id", "process", "event", "event_at", "cause", "session_id", "session_component", "session_host"}, func(m *machine) ([][]any, error) {
			rows := g.historyOf(m)
			g.history += len(rows)
			return rows, nil
		}},
		{"machine_agent_heartbeat", []string{"machine_id", "agent_heartbeat_at", "agent_heartbeat_coarse_at"}, func(m *machine) ([][]any, error) {
			if m.state != healthy && m.state != stale {
				return nil, nil
			}
			at := m.heartbeatAt.Add(g.beatNow.Sub(g.now))
			return [][]any{{m.id, at, at}}, nil
		}},
	}
	loadStart := time.Now()
	for _, c := range copies {
		if c.table == "machine_agent_heartbeat" {
			g.beatNow = g.now.Add(time.Since(loadStart))
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, g.each(c.rows)); err != nil {
			return fmt.Errorf("copying %s: %w", c.table, err)
		}
	}
	return nil
}

func failCause(m *machine) string {
	if m.state == fresh {
		return "ssh: dial tcp: connect: connection refused"
	}
	return "provider reboot: 503 Service Unavailable"
}

// historyOf is the work history that led a machine to its state: its agent
// starts and recoveries, then its failures and its open work.
func (g *gen) historyOf(m *machine) [][]any {
	var rows [][]any
	ev := func(p bmdb.Process, e bmdb.Event, at time.Time, cause string, session uuid.UUID, component string) {
		rows = append(rows, []any{m.id, string(p), string(e), at, cause, session, component, "seed"})
	}
	pair := func(p bmdb.Process, end bmdb.Event, at time.Time, cause string) {
		component := "shepherd-agentstart"
		if p == bmdb.ProcessShepherdRecovery {
			component = "shepherd-recovery"
		}
		took := jitter(m.r, 5*time.Second, 30*time.Second)
		ev(p, bmdb.EventStarted, at.Add(-took), "", m.era, component)
		ev(p, end, at, cause, m.era, component)
	}
	if m.state != fresh {
		if m.recovered {
			first := m.createdAt.Add(m.startedAt.Sub(m.createdAt) / 3)
			pair(bmdb.ProcessShepherdAgentStart, bmdb.EventFinished, first, "")
			pair(bmdb.ProcessShepherdRecovery, bmdb.EventFinished, m.startedAt.Add(-m.startedAt.Sub(first)/2), "")
		}
		pair(bmdb.ProcessShepherdAgentStart, bmdb.EventFinished, m.startedAt, "")
	}
	if m.role == backedOff {
		// Earlier failures, spaced by the policy's growing intervals.
		at := m.failedAt
		var times []time.Time
		iv := m.backoffInterval()
		for k := m.failures; k > 0; k-- {
			times = append(times, at)
			at = at.Add(-time.Duration(iv)*time.Second - jitter(m.r, time.Second, time.Minute))
			iv = max(1, int64(float64(iv)/m.policy().Exponent))
		}
		for k := len(times) - 1; k >= 0; k-- {
			pair(m.process(), bmdb.EventFailed, times[k], failCause(m))
		}
	}
	if m.role == working {
		ev(m.process(), bmdb.EventStarted, m.workAt, "", g.session, "seed")
	}
	return rows
}

func (g *gen) result() Result {
	res := Result{Machines: g.opt.Machines, History: g.history, Session: g.session}
	for i, s := range g.states {
		switch s {
		case healthy:
			res.Healthy++
		case fresh:
			res.New++
		case stale:
			res.Stale++
		case silent:
			res.Silent++
		}
		agentStart := s == fresh
		switch g.roles[i] {
		case backedOff:
			if agentStart {
				res.AgentStartBackoff++
			} else {
				res.RecoveryBackoff++
			}
		case working:
			if agentStart {
				res.AgentStartWork++
			} else {
				res.RecoveryWork++
			}
		}
	}
	return res
}

// AgentStartEligible is how many machines AgentStart may claim right after
// the seed.
func (r Result) AgentStartEligible() int { return r.New - r.AgentStartBackoff - r.AgentStartWork }

// RecoveryEligible is how many machines Recovery may claim right after the
// seed.
func (r Result) RecoveryEligible() int {
	return r.Stale + r.Silent - r.RecoveryBackoff - r.RecoveryWork
}
