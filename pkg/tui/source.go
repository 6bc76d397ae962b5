// Package tui is the live fleet view behind `bmctl machines watch`: a
// bubbletea program showing machines, their derived state, the work the
// shepherd holds on them, backoffs and history, refreshed from BMDB through
// LISTEN/NOTIFY. It reads through a Source, so the model can be driven by any
// store that answers the same questions (pkg/fleet is the real one).
package tui

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Source is what the view reads and, when actions are allowed, changes.
type Source interface {
	// Page returns one window of the machines matching q, ordered by q's
	// sort, together with the fleet summary.
	Page(ctx context.Context, q Query) (Page, error)
	// Locate returns the position of a machine (UUID, unique UUID prefix or
	// provider id) in the ordering of q, or ErrNotInView.
	Locate(ctx context.Context, q Query, ref string) (int, error)
	// Detail returns everything known about one machine.
	Detail(ctx context.Context, id uuid.UUID) (Detail, error)
	// ClearBackoff clears a machine's backoff for process and records it in
	// the machine's history.
	ClearBackoff(ctx context.Context, id uuid.UUID, process string) error
	// RequestRecovery makes the machine a Recovery candidate now.
	RequestRecovery(ctx context.Context, id uuid.UUID) error
	// Preview says what an action would change, one line per change,
	// changing nothing; it fails when there is nothing to change.
	Preview(ctx context.Context, a Action) ([]string, error)
	// Do makes the action's changes and records them in history.
	Do(ctx context.Context, a Action) error
}

// ActionKind is an operator action the view offers besides the two above.
type ActionKind int

const (
	ActionHold ActionKind = iota + 1
	ActionRelease
	ActionCancelWork
)

// Action is one operator action on one machine: hold it (for every process,
// until Until, zero: until released), release its holds, or cancel the
// work held on it.
type Action struct {
	Kind    ActionKind
	Machine uuid.UUID
	Reason  string
	Until   time.Time
}

// ErrNotInView means a machine exists but the current filter hides it.
var ErrNotInView = errors.New("machine is not in the current filter")

// Column is a sortable column of the machine table.
type Column int

const (
	ColMachine Column = iota
	ColProvider
	ColLocation
	ColAddress
	ColState
	ColWork
	ColBackoff
	ColHeartbeat
	numColumns
)

var columnNames = [numColumns]string{"MACHINE", "PROVIDER", "LOCATION", "ADDRESS", "STATE", "WORK", "BACKOFF", "HEARTBEAT"}

func (c Column) String() string {
	if c < 0 || c >= numColumns {
		return "?"
	}
	return columnNames[c]
}

// Query selects and orders machines. Text matches any shown field
// case-insensitively; State and Process narrow to one derived state or to
// machines with work or a backoff of one process.
type Query struct {
	Text    string
	Invert  bool // keep the machines Text does not match
	State   string
	Process string
	Sort    Column
	Desc    bool
	Offset  int
	Limit   int
}

// Row is one machine in the table.
type Row struct {
	ID         uuid.UUID
	Provider   string
	ProviderID string
	Location   string
	Address    string
	State      string

	// Work is the work item shown (the oldest if several), empty if none.
	WorkProcess   string
	WorkDetail    string
	WorkComponent string
	WorkHost      string
	WorkStarted   time.Time

	// Backoff is the unexpired backoff ending last, empty if none.
	BackoffProcess string
	BackoffUntil   time.Time
	BackoffCause   string

	// AgentStarted says the machine has a started agent; HeartbeatAt is zero
	// when the agent never heart-beat.
	AgentStarted bool
	HeartbeatAt  time.Time
}

// Count is one named number of the fleet summary.
type Count struct {
	Name string
	N    int
}

// Summary is the whole fleet at a glance, regardless of the filter.
type Summary struct {
	Machines int
	States   []Count
	Work     []Count
	Backoffs []Count
	// Alerts are the brakes that stop automation fleet-wide or per
	// location (open breakers, an absent heartbeat observer), shown as a
	// banner above the summary.
	Alerts []string
}

// Page is one window of matching machines.
type Page struct {
	Rows    []Row
	Offset  int
	Total   int // machines matching the query
	Summary Summary
}

// Detail is everything about one machine.
type Detail struct {
	Row
	CreatedAt         time.Time
	ProviderStatus    string
	AgentStartedAt    time.Time
	AgentKey          string // fingerprint of the agent's public key
	HardwareAt        time.Time
	SSHHostKey        string // fingerprint of the pinned SSH host key
	SSHHostKeyPinned  time.Time
	RecoveryRequested time.Time
	RecoveryRequester string
	Work              []WorkItem
	Backoffs          []BackoffItem
	History           []HistoryItem
	// Why is explain's answer per process.
	Why []WhyItem
}

// WhyItem is one process's answer to "why (not) this machine": bmctl
// explain's verdict with its failing conditions.
type WhyItem struct {
	Process   string
	Candidate bool
	Reason    string
	Next      time.Time // zero: not knowable
	Failing   []string  // "condition: detail"
	Hold      string
}

// WorkItem is a work item and the session holding it.
type WorkItem struct {
	Process   string
	Detail    string
	Started   time.Time
	SessionID uuid.UUID
	Component string
	Host      string
	PID       int
	Version   string
	Deadline  time.Time
}

// BackoffItem is a backoff, active or expired.
type BackoffItem struct {
	Process      string
	Until        time.Time
	Cause        string
	LastInterval time.Duration
}

// HistoryItem is one work history event.
type HistoryItem struct {
	ID        int64
	At        time.Time
	Process   string
	Event     string
	Cause     string
	Component string
	Host      string
	// Actor is who did it: an operator ("alice@jump1") or component@host.
	Actor string
}
