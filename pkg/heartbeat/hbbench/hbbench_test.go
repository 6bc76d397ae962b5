package hbbench_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/heartbeat/hbbench"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestRunCountsWhatLands checks the bench against the database: every agent
// made first contact with its report, and the count bound ends the run.
func TestRunCountsWhatLands(t *testing.T) {
	url := pgtest.URL(t)
	agents := 20
	if s := os.Getenv("HBBENCH_AGENTS"); s != "" { // for profiling at scale
		agents, _ = strconv.Atoi(s)
	}
	res, err := hbbench.Run(context.Background(), hbbench.Options{
		DatabaseURL: url, CADir: t.TempDir(), Agents: agents,
		Duration: time.Minute, MaxHeartbeats: int64(agents) * 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 0 || res.Accepted != int64(agents)*10 {
		t.Errorf("accepted %d, failed %d (%s); want exactly the %d of the count bound", res.Accepted, res.Failed, res.FirstError, agents*10)
	}
	if res.P99 < res.P50 || res.Max < res.P99 {
		t.Errorf("latency quantiles out of order: %+v", res)
	}
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var beats, reports int
	if err := c.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM machine_agent_heartbeat), (SELECT count(*) FROM machine_hardware_report)`).Scan(&beats, &reports); err != nil {
		t.Fatal(err)
	}
	if beats != agents || reports != agents {
		t.Errorf("%d heartbeat tags and %d hardware reports, want %d each", beats, reports, agents)
	}
}
