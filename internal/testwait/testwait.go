// Package testwait makes tests wait for a condition, never for a time: a
// sleep that was long enough on a quiet machine is not on a loaded one.
package testwait

import (
	"testing"
	"time"
)

// Limit is how long For waits: it only keeps a broken test from hanging, so
// it is far above what any condition needs.
const Limit = 2 * time.Minute

// For polls ok until it holds and fails the test if Limit passes first.
func For(t testing.TB, what string, ok func() bool) {
	t.Helper()
	Within(t, what, Limit, ok)
}

// Within is For with its own limit, for a condition whose lateness is itself
// the failure.
func Within(t testing.TB, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	if !Until(limit, ok) {
		t.Fatalf("timed out after %s waiting for %s", limit, what)
	}
}

// Until polls ok until it holds or limit passes, and says whether it held.
// Polls start 10 ms apart and back off to 100 ms, so a condition that reads
// the database does not load it.
func Until(limit time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(limit)
	for pause := 10 * time.Millisecond; !ok(); pause = min(2*pause, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
	return true
}
