package bmdb_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// listenConn is a connection of its own to conn's database, as views use.
func listenConn(t *testing.T, conn *bmdb.Conn) *pgx.Conn {
	t.Helper()
	c, err := pgx.ConnectConfig(context.Background(), conn.Pool.Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// nextNotification waits up to d for a notification on c.
func nextNotification(c *pgx.Conn, d time.Duration) (*pgconn.Notification, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.WaitForNotification(ctx)
}

// Writers notify only while a listener holds a lease: a bare LISTEN hears
// nothing, the same LISTEN hears changes once a Listener is open, and nothing
// again once it closed.
func TestNotificationsOnlyWhileListened(t *testing.T) {
	conn := open(t)
	ctx := context.Background()
	bare := listenConn(t, conn)
	if _, err := bare.Exec(ctx, "LISTEN bmdb_change"); err != nil {
		t.Fatal(err)
	}
	addMachines(t, conn, 1)
	if n, err := nextNotification(bare, 300*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("notified with nobody listening: %v, %v", n, err)
	}

	l, err := bmdb.Listen(ctx, listenConn(t, conn), "bmdb_change", "work_history")
	if err != nil {
		t.Fatal(err)
	}
	m := addMachines(t, conn, 1)[0]
	if n, err := nextNotification(bare, time.Minute); err != nil || (n.Payload != "machines" && n.Payload != "machine_provided") {
		t.Fatalf("no notification while a listener holds a lease: %v, %v", n, err)
	}
	s := session(t, conn, "listen-test", 10*time.Second)
	if _, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, all([]uuid.UUID{m})); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		n, err := l.Wait(waitCtx)
		if err != nil {
			t.Fatalf("the listener heard no Started event: %v", err)
		}
		if n.Channel == "work_history" {
			if n.Payload[:36] != m.String() {
				t.Fatalf("work_history payload %q is not about %s", n.Payload, m)
			}
			break
		}
	}

	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for { // drain what was sent while listened
		if _, err := nextNotification(bare, 300*time.Millisecond); err != nil {
			break
		}
	}
	addMachines(t, conn, 1)
	if n, err := nextNotification(bare, 300*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("notified after the last listener closed: %v, %v", n, err)
	}
}

// A writer that looked for listeners before the lease existed sends nothing;
// Listen returns only after it committed, so a read after Listen sees it.
func TestListenWaitsForWritersThatDidNotNotify(t *testing.T) {
	conn := open(t)
	ctx := context.Background()
	tx, err := conn.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := bmdb.AddProvidedMachine(ctx, tx, bmdb.ProvidedMachine{Provider: "test", ProviderID: "in-flight"}); err != nil {
		t.Fatal(err)
	}
	listened := make(chan error, 1)
	lc := listenConn(t, conn)
	go func() {
		_, err := bmdb.Listen(ctx, lc, "bmdb_change")
		listened <- err
	}()
	select {
	case err := <-listened:
		t.Fatalf("Listen returned while a writer that did not notify was still open: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-listened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Listen did not return after the writer committed")
	}
}
