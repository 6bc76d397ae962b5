package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestRunSmall runs the whole benchmark at toy sizes against a test
// database: every row of the table is filled, the fleet the candidate rows
// report is the one seeded, and the plans are saved. It checks the driver,
// not speed.
func TestRunSmall(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	cfg := Config{
		Dir: dir, URL: pgtest.URL(t), Duration: time.Second, Rounds: 2, Sessions: []int{1, 4},
		ClaimMachines: 2000, ClaimEligible: 200, Fleets: []int{2000}, Samples: 20, PgbenchScale: 1, HistoryEvents: 20_000,
	}
	if err := Run(context.Background(), cfg, &out); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, want := range []string{
		"pgbench -N tps", "claim+finish cycles/s (bmdb)", "seed's way cycles/s",
		// Steady 2000: 10 new, 10 stale; 3 of each backed off, 3 worked on.
		"AgentStart candidates, 2k steady (4 eligible)", "Recovery candidates, 2k steady (4 eligible)",
		"heartbeat upserts, 2k steady", "explain, 2k steady (20 machines)", "history --all --since 1h, 20k events (", "shepherd RSS, 32 workers per loop|  not measured",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	saved, err := os.ReadFile(filepath.Join(dir, "results.txt"))
	if err != nil || string(saved) != table {
		t.Errorf("results.txt differs from the printed table (%v)", err)
	}
	for _, name := range []string{"plan-agentstart-2k.txt", "plan-recovery-2k.txt"} {
		plan, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !strings.Contains(string(plan), "Buffers: shared hit=") || !strings.Contains(string(plan), "LockRows") {
			t.Errorf("%s is not an EXPLAIN (ANALYZE, BUFFERS) of a locking query (%v):\n%s", name, err, plan)
		}
	}
}
