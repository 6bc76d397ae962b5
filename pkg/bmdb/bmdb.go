// Package bmdb is the library every bmctl loop and view uses to reach BMDB, the
// PostgreSQL schema of machines, tags, sessions, work locks, backoffs and work
// history: connecting, migrating, sessions, claiming and ending work, and the
// queries the shepherd and the views share.
package bmdb

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"
)

// Process is a kind of work, the process enum in BMDB.
type Process string

const (
	// ProcessShepherdAccess is the legacy catch-all shepherd process. Nothing
	// new claims it, but it still excludes the processes it was split into.
	ProcessShepherdAccess     Process = "ShepherdAccess"
	ProcessShepherdAgentStart Process = "ShepherdAgentStart"
	ProcessShepherdRecovery   Process = "ShepherdRecovery"
)

// Processes lists every process, legacy first.
var Processes = []Process{ProcessShepherdAccess, ProcessShepherdAgentStart, ProcessShepherdRecovery}

// ParseProcess accepts a process name, case-insensitively, with or without the
// "Shepherd" prefix ("agentstart", "ShepherdRecovery").
func ParseProcess(s string) (Process, error) {
	for _, p := range Processes {
		if strings.EqualFold(s, string(p)) || strings.EqualFold("Shepherd"+s, string(p)) {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown process %q (want one of AgentStart, Recovery, Access)", s)
}

// Event is what happened to a work item, as recorded in work history.
type Event string

const (
	EventStarted  Event = "Started"
	EventFinished Event = "Finished"
	EventFailed   Event = "Failed"
	EventCanceled Event = "Canceled"
	// EventLost marks work that died with an expired session.
	EventLost Event = "Lost"
	// EventBackoffCleared records an operator clearing a backoff.
	EventBackoffCleared Event = "BackoffCleared"
)

var (
	// ErrSessionExpired means the session is past its deadline (or gone):
	// nothing can be done under it any more; start a new one.
	ErrSessionExpired = errors.New("BMDB session expired")
	// ErrNothingToDo means a Work call found no candidate it could lock.
	ErrNothingToDo = errors.New("no machine to work on")
	// ErrWorkLost means the work item is no longer held by this session (its
	// session expired and the work was swept).
	ErrWorkLost = errors.New("work item no longer held by this session")
	// ErrCancelRequested means an operator asked for the work to be
	// canceled; the cause of the work's Context is a *CancelRequest.
	ErrCancelRequested = errors.New("an operator asked to cancel the work")
	// ErrWorkDone means Finish, Fail or Cancel was already called.
	ErrWorkDone = errors.New("work item already ended")
)

// Conn is a pool of connections to BMDB.
type Conn struct {
	Pool *pgxpool.Pool
	url  string
}

// Open connects to the database at url and checks that it answers.
func Open(ctx context.Context, url string) (*Conn, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("invalid database URL: %w", err)
	}
	if cfg.MaxConns < 8 {
		cfg.MaxConns = 8
	}
	// The views' state queries have wide plans whose estimated cost passes
	// jit_above_cost on a fresh or small database: PostgreSQL then spent
	// ~0.5 s compiling each ~1 ms query. So do the triggers that the functions
	// planned with sequential scans off (migration 0014) fire: their one
	// remaining sequential scan costs 10^10, and with JIT on that cached plan
	// compiled on every call (15 ms a write). Nothing bmctl runs gains from JIT.
	if _, set := cfg.ConnConfig.RuntimeParams["jit"]; !set {
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
	}
	// google/uuid values are driver.Valuers that return text: without this,
	// pgx tried binary, failed and fell back to text for every uuid
	// parameter, a fifth of the client's CPU in a claim.
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		pgxuuid.Register(c.TypeMap())
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database at %s does not answer (is it running? check --db / BMCTL_DATABASE_URL): %w", redact(cfg.ConnConfig.Host), err)
	}
	return &Conn{Pool: pool, url: url}, nil
}

// URL is the connection string the Conn was opened with.
func (c *Conn) URL() string { return c.url }

// Close closes every connection.
func (c *Conn) Close() { c.Pool.Close() }

func redact(host string) string {
	if host == "" {
		return "the default socket"
	}
	return host
}
