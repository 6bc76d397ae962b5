package bmdb

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ListenerLease is how long a listener counts for BMDB's triggers without
// renewing; Wait renews it every third of that.
const ListenerLease = 30 * time.Second

// ErrListenLapsed means a listener did not renew its lease in time (the
// process stalled, or BMDB was out of reach), so changes may have gone
// unannounced: read the state afresh before trusting notifications again.
var ErrListenLapsed = errors.New("change notifications lapsed: the listener's lease ran out, changes may have been missed")

// Listener is a LISTEN on a connection of its own together with the lease that
// makes BMDB's triggers notify at all (migration 0009: notifications cost
// every writer a commit-time lock, so they are sent only while someone
// listens).
type Listener struct {
	conn    *pgx.Conn
	id      uuid.UUID
	renewAt time.Time
}

// Listen LISTENs on channels over conn and takes a lease. It returns once
// every transaction that may have written without notifying has ended, so a
// read made after Listen, plus the notifications that follow, miss nothing.
// conn may still run queries between Waits.
func Listen(ctx context.Context, conn *pgx.Conn, channels ...string) (*Listener, error) {
	for _, ch := range channels {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return nil, err
		}
	}
	host, _ := os.Hostname()
	l := &Listener{conn: conn, id: uuid.New()}
	_, err := conn.Exec(ctx, `
		WITH expired AS (DELETE FROM change_listeners WHERE listener_deadline < now())
		INSERT INTO change_listeners (listener_id, listener_host, listener_deadline)
		VALUES ($1, $2, now() + make_interval(secs => $3))`, l.id, host, ListenerLease.Seconds())
	if err != nil {
		return nil, err
	}
	l.renewAt = time.Now().Add(ListenerLease / 3)
	// A writer whose trigger looked before the lease was committed has its
	// transaction id already; wait for those still running to end.
	var running []string
	if err := conn.QueryRow(ctx, `SELECT coalesce(array_agg(x::text), '{}') FROM pg_snapshot_xip(pg_current_snapshot()) x`).Scan(&running); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(10 * time.Second); len(running) > 0 && time.Now().Before(deadline); {
		var left int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM unnest($1::text[]) x WHERE pg_xact_status(x::xid8) = 'in progress'`, running).Scan(&left)
		if err != nil {
			return nil, err
		}
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return l, nil
}

// Wait returns the next notification, renewing the lease while it waits. It
// fails with ErrListenLapsed if the lease ran out before it was renewed.
func (l *Listener) Wait(ctx context.Context) (*pgconn.Notification, error) {
	for {
		if !time.Now().Before(l.renewAt) {
			tag, err := l.conn.Exec(ctx, `
				UPDATE change_listeners SET listener_deadline = now() + make_interval(secs => $2)
				WHERE listener_id = $1 AND listener_deadline > now()`, l.id, ListenerLease.Seconds())
			if err != nil {
				return nil, err
			}
			if tag.RowsAffected() == 0 {
				return nil, ErrListenLapsed
			}
			l.renewAt = time.Now().Add(ListenerLease / 3)
		}
		wctx, cancel := context.WithDeadline(ctx, l.renewAt)
		n, err := l.conn.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			continue // time to renew
		}
		return n, err
	}
}

// Close gives the lease up, so writers stop notifying when nobody else
// listens. The LISTEN ends with the connection.
func (l *Listener) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := l.conn.Exec(ctx, `DELETE FROM change_listeners WHERE listener_id = $1`, l.id)
	return err
}
