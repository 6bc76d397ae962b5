package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// waitForDB runs connect until it succeeds, or fails for a reason other than
// BMDB being out of reach (a bad URL, a dirty or newer schema: those exit at
// once). A daemon started while its database restarts or fails over waits
// for it instead of exiting.
func waitForDB[T any](ctx context.Context, log *slog.Logger, connect func(context.Context) (T, error)) (T, error) {
	pause := time.Second
	for {
		v, err := connect(ctx)
		if err == nil || !bmdb.Unreachable(err) || ctx.Err() != nil {
			return v, err
		}
		log.Warn("BMDB is out of reach; waiting for it", "err", err, "retry_in", pause)
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Second)
	}
}
