package hbbench_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/testwait"
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

// TestCeilings: the transport ceiling answers every heartbeat and writes
// nothing; the database ceiling writes every row it counts.
func TestCeilings(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	beats := func() (n int) {
		if err := c.QueryRow(ctx, `SELECT count(*) FROM machine_agent_heartbeat`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	bare, ca, stop, err := hbbench.ServeBare(t.TempDir(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	res, err := hbbench.Run(ctx, hbbench.Options{DatabaseURL: url, Endpoint: bare, EndpointCA: ca, Agents: 5, Duration: time.Minute, MaxHeartbeats: 50})
	stop()
	if err != nil || res.Accepted != 50 || res.Failed != 0 {
		t.Errorf("transport ceiling: accepted %d, failed %d (%v, %s); want all 50", res.Accepted, res.Failed, err, res.FirstError)
	}
	if n := beats(); n != 0 {
		t.Errorf("the transport ceiling wrote %d heartbeats; it must not touch the database", n)
	}

	res, err = hbbench.UpsertCeiling(ctx, hbbench.Options{DatabaseURL: url, Agents: 20, Duration: time.Minute, MaxHeartbeats: 100}, 2, 5)
	if err != nil || res.Accepted != 100 || res.WALBytes <= 0 {
		t.Errorf("database ceiling: %d rows, %d WAL bytes (%v), want 100 rows and their WAL", res.Accepted, res.WALBytes, err)
	}
	// The server counts every row written once the ceiling's connections
	// have closed and reported.
	var written int
	if !testwait.Until(testwait.Limit, func() bool {
		if err := c.QueryRow(ctx, `SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE relname = 'machine_agent_heartbeat'`).Scan(&written); err != nil {
			t.Fatal(err)
		}
		return written == 100
	}) {
		t.Fatalf("the database counts %d heartbeat rows written, want the ceiling's 100", written)
	}
	if n := beats(); n < 5 || n > 20 {
		t.Errorf("%d machines with heartbeats after the database ceiling, want some of its 20", n)
	}
}

// TestServerSideQuantiles: the in-process endpoint's own histogram covers
// the measured phase, and its p99 bound is no lower than its p50's.
func TestServerSideQuantiles(t *testing.T) {
	res, err := hbbench.Run(context.Background(), hbbench.Options{
		DatabaseURL: pgtest.URL(t), CADir: t.TempDir(), Agents: 10, Duration: time.Minute, MaxHeartbeats: 200,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ServerP50 <= 0 || res.ServerP99 < res.ServerP50 {
		t.Errorf("server-side p50 %s, p99 %s; want both from the endpoint's histogram, in order", res.ServerP50, res.ServerP99)
	}
}
