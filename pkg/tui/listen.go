package tui

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Channels BMDB's triggers notify on (migration 0005): bmdb_change carries a
// table name per changing statement, work_history one line per event.
var listenChannels = []string{"bmdb_change", "work_history"}

// ListenEvent is what the listener reports to the view.
type ListenEvent struct {
	// Connected: LISTEN is (again) in place. Changes made while it was not
	// were missed, so the view refreshes.
	Connected bool
	// Lost: the connection failed; the listener retries after RetryIn.
	Lost    error
	RetryIn time.Duration
	// Channel and Payload of a notification.
	Channel string
	Payload string
}

// Listen holds a dedicated connection (not from a pool: LISTEN belongs to one
// session) listening for BMDB changes, and reconnects with backoff when it
// drops. Events arrive on the returned channel, which is closed when ctx ends.
// Notifications are dropped while the view has not read the previous ones:
// one pending notification already means "refresh".
func Listen(ctx context.Context, url string, log *slog.Logger) <-chan ListenEvent {
	out := make(chan ListenEvent, 16)
	go func() {
		defer close(out)
		send := func(ev ListenEvent) bool {
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		retry := minRetry
		for ctx.Err() == nil {
			err := listenOnce(ctx, url, log, out, func() {
				retry = minRetry
				send(ListenEvent{Connected: true})
			})
			if ctx.Err() != nil {
				return
			}
			log.Warn("change listener lost its connection", "err", err, "retry_in", retry)
			if !send(ListenEvent{Lost: err, RetryIn: retry}) {
				return
			}
			select {
			case <-time.After(retry):
			case <-ctx.Done():
				return
			}
			retry = min(retry*2, maxRetry)
		}
	}()
	return out
}

const (
	minRetry = 250 * time.Millisecond
	maxRetry = 10 * time.Second
)

func listenOnce(ctx context.Context, url string, log *slog.Logger, out chan<- ListenEvent, connected func()) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.Connect(cctx, url)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	l, err := bmdb.Listen(ctx, conn, listenChannels...)
	if err != nil {
		return err
	}
	defer l.Close(ctx)
	log.Info("listening for changes", "channels", listenChannels)
	connected()
	for {
		n, err := l.Wait(ctx)
		if err != nil {
			return err
		}
		select {
		case out <- ListenEvent{Channel: n.Channel, Payload: n.Payload}:
		default:
		}
	}
}
