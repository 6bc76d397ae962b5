package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// fleetDB is a fresh BMDB for one test, seeded through pkg/bmdb's API, and
// the --db flag that points bmctl at it.
type fleetDB struct {
	t    *testing.T
	url  string
	conn *bmdb.Conn
}

func newFleetDB(t *testing.T) *fleetDB {
	t.Helper()
	url := pgtest.URL(t)
	conn, err := bmdb.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return &fleetDB{t: t, url: url, conn: conn}
}

// run runs bmctl against this database.
func (f *fleetDB) run(args ...string) result {
	f.t.Helper()
	return bmctl(f.t, "", append([]string{"--db", f.url}, args...)...)
}

// ok runs bmctl and fails the test unless it exits 0 with nothing on stderr.
func (f *fleetDB) ok(args ...string) string {
	f.t.Helper()
	r := f.run(args...)
	if r.code != 0 || r.err != "" {
		f.t.Fatalf("bmctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	return r.out
}

func (f *fleetDB) session(component string) *bmdb.Session {
	f.t.Helper()
	s, err := f.conn.StartSession(context.Background(), bmdb.SessionConfig{Component: component, Interval: time.Minute})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func (f *fleetDB) add(providerID, location string) uuid.UUID {
	f.t.Helper()
	id, err := bmdb.AddProvidedMachine(context.Background(), f.conn.Pool, bmdb.ProvidedMachine{
		Provider: "test", ProviderID: providerID, Address: "10.0.0.1:22", Location: location,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// addWithID creates a provided machine with a chosen id, for prefix tests.
func (f *fleetDB) addWithID(id uuid.UUID, providerID string) {
	f.t.Helper()
	f.exec(`INSERT INTO machines (machine_id) VALUES ($1)`, id)
	f.exec(`INSERT INTO machine_provided (machine_id, provider, provider_id) VALUES ($1, 'test', $2)`, id, providerID)
}

func (f *fleetDB) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.conn.Pool.Exec(context.Background(), sql, args...); err != nil {
		f.t.Fatal(err)
	}
}

var fleetTestKey = ed25519.PublicKey(bytes.Repeat([]byte{7}, ed25519.PublicKeySize))

func onlyMachine(id uuid.UUID) func(pgx.Tx) ([]uuid.UUID, error) {
	return func(pgx.Tx) ([]uuid.UUID, error) { return []uuid.UUID{id}, nil }
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
}

// lines splits output into lines, without the final empty one.
func outLines(s string) []string {
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}

// lockedBuffer is a buffer one goroutine writes while another reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *lockedBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *lockedBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
