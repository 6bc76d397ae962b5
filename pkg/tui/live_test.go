package tui

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// liveDB is a fresh database on the real clock with n provided machines.
func liveDB(t *testing.T, n int) (string, *bmdb.Conn) {
	t.Helper()
	url := pgtest.URL(t)
	ctx := context.Background()
	conn, err := bmdb.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	for i := range n {
		_, err := bmdb.AddProvidedMachine(ctx, conn.Pool, bmdb.ProvidedMachine{
			Provider: "sim", ProviderID: "live-" + string(rune('a'+i)), Address: "10.9.0.1", Location: "lab"})
		if err != nil {
			t.Fatal(err)
		}
	}
	return url, conn
}

func liveOptions(t *testing.T, url string, conn *bmdb.Conn) Options {
	return Options{
		Source:   FleetSource{DB: conn.Pool, Operator: "ops@jump"},
		Events:   Listen(background(t), url, discardLog()),
		Refresh:  time.Hour, // only notifications refresh the view
		Debounce: 50 * time.Millisecond,
	}
}

// A work item started by another component shows up without a key press:
// the claim's NOTIFY makes the view refresh.
func TestLiveChange(t *testing.T) {
	url, conn := liveDB(t, 1)
	s := startScreen(t, liveOptions(t, url, conn), 220, 20)
	s.waitIdle("one new machine, live", func(f string, m Model) bool {
		return m.page.Total == 1 && m.listenState == "live" && strings.Contains(f, " new ")
	})

	ctx := context.Background()
	shepherd, err := conn.StartSession(ctx, bmdb.SessionConfig{Component: "shepherd-agentstart", Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer shepherd.Close(ctx)
	w, err := shepherd.Work(ctx, bmdb.ProcessShepherdAgentStart, func(tx pgx.Tx) ([]uuidT, error) {
		return bmdb.AgentStartCandidates(ctx, tx, 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.waitText("agent_starting", "AgentStart", "by shepherd-agentsta")
	if err := w.SetDetail(ctx, "dialing"); err != nil {
		t.Fatal(err)
	}
	s.waitText("dialing")
	if err := w.Fail(ctx, &bmdb.AgentStartBackoff, "ssh: connection refused"); err != nil {
		t.Fatal(err)
	}
	s.waitText("backed_off", "AgentStart 4m: ssh: connection refused")
}

// When the listening connection dies the view says so, reconnects, and
// refreshes for what it may have missed.
func TestConnectionLost(t *testing.T) {
	url, conn := liveDB(t, 1)
	s := startScreen(t, liveOptions(t, url, conn), 220, 20)
	s.waitIdle("live", func(_ string, m Model) bool { return m.listenState == "live" })

	ctx := context.Background()
	// The lost state shows only until the listener reconnects (a quarter
	// second later): look for it among every frame since the kill.
	since := s.frameCount()
	var killed int
	err := conn.Pool.QueryRow(ctx, `
		SELECT count(pg_terminate_backend(listener_pid)) FROM change_listeners`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminating the listener: %d, %v", killed, err)
	}
	s.waitShown(since, "connection lost, retrying")
	// A change made while the listener reconnects is not lost.
	if _, err := bmdb.AddProvidedMachine(ctx, conn.Pool, bmdb.ProvidedMachine{Provider: "sim", ProviderID: "during"}); err != nil {
		t.Fatal(err)
	}
	s.waitIdle("live again with both machines", func(f string, m Model) bool {
		return m.listenState == "live" && m.page.Total == 2 && strings.Contains(f, "● live")
	})
}

// Pausing stops refreshes; resuming catches up.
func TestPause(t *testing.T) {
	url, conn := liveDB(t, 1)
	s := startScreen(t, liveOptions(t, url, conn), 220, 20)
	s.waitIdle("live", func(_ string, m Model) bool { return m.listenState == "live" && m.page.Total == 1 })
	s.press("p")
	s.waitText("PAUSED")
	if _, err := bmdb.AddProvidedMachine(context.Background(), conn.Pool, bmdb.ProvidedMachine{Provider: "sim", ProviderID: "later"}); err != nil {
		t.Fatal(err)
	}
	_, m := s.waitFor("the change counted while paused", func(_ string, m Model) bool { return m.pending > 0 })
	if m.page.Total != 1 {
		t.Fatalf("paused view refreshed: %d machines", m.page.Total)
	}
	s.press("p")
	s.waitIdle("the change after resuming", loaded(2))
}

// countingSource passes every call to the real source and records how many
// page queries ran at once.
type countingSource struct {
	Source
	mu             sync.Mutex
	inFlight, most int
	pages          int
}

func (c *countingSource) Page(ctx context.Context, q Query) (Page, error) {
	c.mu.Lock()
	c.inFlight++
	c.pages++
	c.most = max(c.most, c.inFlight)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}()
	return c.Source.Page(ctx, q)
}

// A burst of changes does not become a burst of concurrent queries:
// notifications coalesce, and at most one page query runs at a time.
func TestBurstCoalesces(t *testing.T) {
	url, conn := liveDB(t, 1)
	opt := liveOptions(t, url, conn)
	src := &countingSource{Source: opt.Source}
	opt.Source = src
	s := startScreen(t, opt, 160, 20)
	s.waitIdle("live", func(_ string, m Model) bool { return m.listenState == "live" && m.page.Total == 1 })
	const burst = 200
	for i := range burst {
		if _, err := bmdb.AddProvidedMachine(context.Background(), conn.Pool, bmdb.ProvidedMachine{
			Provider: "burst", ProviderID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.waitIdle("every machine of the burst", loaded(burst+1))
	src.mu.Lock()
	defer src.mu.Unlock()
	// Each insert notifies on two tables. How many queries they coalesce
	// into depends on timing, so it is logged, not asserted.
	if src.most != 1 {
		t.Errorf("%d page queries ran at once", src.most)
	}
	t.Logf("%d notifications, %d page queries", 2*burst, src.pages)
}
