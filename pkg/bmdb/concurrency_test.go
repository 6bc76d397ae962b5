package bmdb_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// TestConcurrentClaimsNeverOverlap has many workers in several sessions
// claim, finish, fail and cancel work of every shepherd process on a few
// machines, offering every machine to every claim so that only the database
// decides. Midway one session dies. Two independent checks: a poller that
// snapshots the work table and never sees a machine held twice, and the
// history, which must alternate Started and one end per machine (a second
// Started before an end would mean two holders at once).
func TestConcurrentClaimsNeverOverlap(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 6)
	processes := []bmdb.Process{bmdb.ProcessShepherdAgentStart, bmdb.ProcessShepherdRecovery, bmdb.ProcessShepherdAccess}
	policy := bmdb.Backoff{Initial: time.Second, Maximum: time.Minute, Exponent: 1.5}
	// The workers run for at least 4s and until enough has happened to prove
	// something: a loaded machine (the race detector, two cores) gets through
	// fewer claims per second, not a weaker test. The minute only keeps a
	// broken test from hanging; the counts are checked below all the same.
	run, cancel := context.WithCancel(ctx)
	defer cancel()

	var claims, snapshots, overlaps atomic.Int64
	var wg sync.WaitGroup
	go func() {
		start := time.Now()
		for run.Err() == nil {
			elapsed := time.Since(start)
			if elapsed >= time.Minute || (elapsed >= 4*time.Second && claims.Load() >= 100 && snapshots.Load() >= 50) {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// The poller.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for run.Err() == nil {
			var n int
			err := conn.Pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT machine_id FROM work GROUP BY machine_id HAVING count(*) > 1) x`).Scan(&n)
			if err != nil {
				t.Errorf("snapshot: %v", err)
				return
			}
			snapshots.Add(1)
			overlaps.Add(int64(n))
		}
	}()

	const sessionsN, workersPerSession = 3, 4
	var victim atomic.Pointer[bmdb.Session]
	for si := range sessionsN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for run.Err() == nil {
				s, err := conn.StartSession(ctx, bmdb.SessionConfig{Component: "worker", Interval: time.Second})
				if err != nil {
					t.Errorf("start session: %v", err)
					return
				}
				if si == 0 {
					victim.CompareAndSwap(nil, s)
				}
				var inner sync.WaitGroup
				for range workersPerSession {
					inner.Add(1)
					go func() {
						defer inner.Done()
						for run.Err() == nil {
							p := processes[rand.IntN(len(processes))]
							shuffled := append([]uuid.UUID(nil), ids...)
							rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
							w, err := s.Work(ctx, p, all(shuffled))
							if errors.Is(err, bmdb.ErrNothingToDo) {
								continue
							}
							if errors.Is(err, bmdb.ErrSessionExpired) {
								return
							}
							if err != nil {
								t.Errorf("Work: %v", err)
								return
							}
							claims.Add(1)
							time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
							switch r := rand.IntN(10); {
							case r < 5:
								err = w.Finish(ctx, nil)
							case r < 8:
								err = w.Fail(ctx, &policy, "simulated failure")
							default:
								err = w.Cancel(ctx, "simulated cancel")
							}
							if errors.Is(err, bmdb.ErrSessionExpired) {
								return
							}
							if err != nil {
								t.Errorf("ending work: %v", err)
								return
							}
						}
					}()
				}
				inner.Wait()
				select {
				case <-s.Expired():
					// Killed: its work is swept by the others; start afresh.
				default:
					if err := s.Close(ctx); err != nil {
						t.Errorf("close: %v", err)
					}
				}
			}
		}()
	}

	// Kill the first session midway, as if its process died.
	time.Sleep(1500 * time.Millisecond)
	if s := victim.Load(); s != nil {
		if _, err := conn.Pool.Exec(ctx, `UPDATE sessions SET session_deadline = now() - interval '1 minute' WHERE session_id = $1`, s.ID()); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	// Whatever the dead session still held is swept into history. Besides the
	// victim, a session whose keep-alive fell behind on a loaded machine may
	// have expired on its own moments ago; Sweep takes it only SweepGrace
	// after its deadline, so sweep until no session is left (the live ones
	// were closed above).
	sweepDeadline := time.Now().Add(time.Minute)
	for {
		if _, err := conn.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		var sessionsLeft int
		if err := conn.Pool.QueryRow(ctx, `SELECT count(*) FROM sessions`).Scan(&sessionsLeft); err != nil {
			t.Fatal(err)
		}
		if sessionsLeft == 0 {
			break
		}
		if time.Now().After(sweepDeadline) {
			t.Fatalf("%d sessions left unswept", sessionsLeft)
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Logf("%d claims, %d snapshots", claims.Load(), snapshots.Load())
	if claims.Load() < 100 || snapshots.Load() < 50 {
		t.Fatalf("too little happened to prove anything: %d claims, %d snapshots", claims.Load(), snapshots.Load())
	}
	if overlaps.Load() != 0 {
		t.Fatalf("snapshots saw %d machines held twice at once", overlaps.Load())
	}
	var left int
	if err := conn.Pool.QueryRow(ctx, `SELECT count(*) FROM work`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d work items left (%v)", left, err)
	}
	checkHistoryAlternates(t, conn, ids)
}

func checkHistoryAlternates(t *testing.T, conn *bmdb.Conn, ids []uuid.UUID) {
	t.Helper()
	var lost int
	for _, id := range ids {
		var open *historyRow
		h := history(t, conn, id)
		for i := range h {
			e := h[i]
			switch e.Event {
			case bmdb.EventStarted:
				if open != nil {
					t.Fatalf("machine %s: Started by %s while %s of %s had not ended", id, *e.Session, open.Process, *open.Session)
				}
				open = &h[i]
			case bmdb.EventFinished, bmdb.EventFailed, bmdb.EventCanceled, bmdb.EventLost:
				if open == nil {
					t.Fatalf("machine %s: %s without a Started", id, e.Event)
				}
				if e.Process != open.Process || *e.Session != *open.Session {
					t.Fatalf("machine %s: %s of %s/%s ends Started of %s/%s", id, e.Event, e.Process, *e.Session, open.Process, *open.Session)
				}
				if e.Event == bmdb.EventLost {
					lost++
				}
				open = nil
			}
		}
		if open != nil {
			t.Fatalf("machine %s: Started without an end", id)
		}
	}
	t.Logf("%d work items lost with the killed session", lost)
}

// TestClaimRace: two sessions race different processes for one machine, many
// times; the database lets exactly one win every time.
func TestClaimRace(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 1)
	a := session(t, conn, "a", 0)
	b := session(t, conn, "b", 0)
	for round := range 50 {
		var wins atomic.Int32
		var held []*bmdb.Work
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, s := range []*bmdb.Session{a, b} {
			p := []bmdb.Process{bmdb.ProcessShepherdAgentStart, bmdb.ProcessShepherdRecovery}[i]
			wg.Add(1)
			go func() {
				defer wg.Done()
				w, err := s.Work(ctx, p, func(tx pgx.Tx) ([]uuid.UUID, error) {
					// The select-time check both transactions pass on READ COMMITTED.
					var busy bool
					if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM work WHERE machine_id = $1)`, ids[0]).Scan(&busy); err != nil || busy {
						return nil, err
					}
					time.Sleep(5 * time.Millisecond)
					return ids, nil
				})
				if err == nil {
					wins.Add(1)
					mu.Lock()
					held = append(held, w)
					mu.Unlock()
				} else if !errors.Is(err, bmdb.ErrNothingToDo) {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d winners", round, wins.Load())
		}
		for _, w := range held {
			if err := w.Finish(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}
