package main

import (
	"strings"
	"testing"
)

// The live view runs in tests of pkg/tui; here, what the command refuses.
func TestWatchRefusals(t *testing.T) {
	r := bmctl(t, "", "machines", "watch", "--refresh", "0s")
	if r.code != 2 || !strings.Contains(r.err, "--refresh must be at least 1s") || strings.Count(r.err, "\n") != 1 {
		t.Errorf("--refresh 0s: code %d, stderr %q", r.code, r.err)
	}
	// Output that is not a terminal (a pipe, a file, this test's buffer)
	// gets a pointer to the scriptable command instead of escape codes.
	r = bmctl(t, "", "machines", "watch")
	if r.code != 1 || !strings.Contains(r.err, "needs a terminal; for scripts use 'bmctl machines list'") || r.out != "" {
		t.Errorf("watch without a terminal: code %d, stdout %q, stderr %q", r.code, r.out, r.err)
	}
	r = bmctl(t, "", "machines", "watch", "extra")
	if r.code != 2 {
		t.Errorf("watch with an argument: code %d, stderr %q", r.code, r.err)
	}
}
