package main

import (
	"context"
	"strings"
	"testing"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

func TestDevSeed(t *testing.T) {
	url := pgtest.URL(t)
	r := bmctl(t, "", "--db", url, "dev", "seed", "--machines", "1000", "--seed", "5")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	for _, want := range []string{"seeded 1000 machines (profile steady, provider seed)", "healthy 990, new 5", "candidates now: AgentStart"} {
		if !strings.Contains(r.out, want) {
			t.Fatalf("output lacks %q:\n%s", want, r.out)
		}
	}
	conn, err := bmdb.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n int
	if err := conn.Pool.QueryRow(context.Background(), `SELECT count(*) FROM machine_provided WHERE provider = 'seed'`).Scan(&n); err != nil || n != 1000 {
		t.Fatalf("%d seeded machines in BMDB (%v), want 1000", n, err)
	}
}

func TestDevSeedBadInput(t *testing.T) {
	url := pgtest.URL(t)
	for _, args := range [][]string{
		{"--machines", "0"},
		{"--machines", "10", "--profile", "chaos"},
		{"--machines", "ten"},
	} {
		r := bmctl(t, "", append([]string{"--db", url, "dev", "seed"}, args...)...)
		if r.code != 2 || strings.Count(strings.TrimSpace(r.err), "\n") != 0 || !strings.HasPrefix(r.err, "bmctl: ") {
			t.Errorf("dev seed %v: exit %d, stderr %q; want exit 2 and one line", args, r.code, r.err)
		}
	}
	r := bmctl(t, "", "dev", "bench", "--fleets", "10,abc")
	if r.code != 2 || !strings.Contains(r.err, "--fleets") {
		t.Errorf("dev bench --fleets 10,abc: exit %d, stderr %q; want exit 2 naming --fleets", r.code, r.err)
	}
}
