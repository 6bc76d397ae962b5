// Package monitoring holds the Prometheus alert rules and the Grafana
// dashboard shipped with bmctl (docs/metrics.md), and the tests that run
// promtool on the rules.
package monitoring

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRulesCheck: promtool accepts the rules file.
func TestRulesCheck(t *testing.T) {
	out, err := exec.Command("promtool", "check", "rules", "bmctl.rules.yml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS: 8 rules found") {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestRulesFireAndStayQuiet: bmctl.rules.test.yml fires each alert from
// synthetic series of its trouble, not before its "for", and keeps every
// alert quiet on a healthy fleet.
func TestRulesFireAndStayQuiet(t *testing.T) {
	out, err := exec.Command("promtool", "test", "rules", "bmctl.rules.test.yml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	// Every alert of the rules file has a test that expects it to fire.
	rules, tests := read(t, "bmctl.rules.yml"), read(t, "bmctl.rules.test.yml")
	for _, line := range strings.Split(rules, "\n") {
		name, ok := strings.CutPrefix(strings.TrimSpace(line), "- alert: ")
		if !ok {
			continue
		}
		if !strings.Contains(tests, "alertname: "+name+"\n        exp_alerts:\n          - exp_labels:") {
			t.Errorf("no test makes %s fire", name)
		}
		if !strings.Contains(tests, "alertname: "+name+", exp_alerts: []}") {
			t.Errorf("no test keeps %s quiet", name)
		}
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
