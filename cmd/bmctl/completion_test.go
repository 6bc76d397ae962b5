package main

import (
	"strings"
	"testing"
)

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := bmctl(t, "", "completion", shell)
		if r.code != 0 || !strings.Contains(r.out, "__complete") {
			t.Errorf("completion %s: exit %d, %d bytes", shell, r.code, len(r.out))
		}
	}
	f, ids := seedViews(t)
	prefix := ids["srv-stale"].String()[:6]
	complete := func(args ...string) string {
		t.Helper()
		r := f.run(append([]string{"__complete"}, args...)...)
		if r.code != 0 {
			t.Fatalf("__complete %v: %+v", args, r)
		}
		return r.out
	}
	out := complete("history", prefix)
	if !strings.Contains(out, ids["srv-stale"].String()+"\ttest srv-stale") {
		t.Errorf("completing %q:\n%s", prefix, out)
	}
	out = complete("machines", "show", "srv-he")
	if !strings.Contains(out, "srv-healthy\t") || strings.Contains(out, "srv-new") {
		t.Errorf("completing a provider id:\n%s", out)
	}
	// A deleted machine with history completes for history, not for show.
	gone := ids["srv-backoff"]
	f.exec(`DELETE FROM machines WHERE machine_id = $1`, gone)
	if out := complete("history", gone.String()[:7]); !strings.Contains(out, gone.String()+"\tdeleted machine") {
		t.Errorf("completing a deleted machine for history:\n%s", out)
	}
	if out := complete("machines", "show", gone.String()[:7]); strings.Contains(out, gone.String()) {
		t.Errorf("show completes a deleted machine:\n%s", out)
	}
	out = complete("machines", "list", "--state", "")
	if !strings.Contains(out, "heartbeat_stale") {
		t.Errorf("completing --state:\n%s", out)
	}
}
