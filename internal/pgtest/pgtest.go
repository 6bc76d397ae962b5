// Package pgtest gives tests real PostgreSQL databases: one throwaway cluster
// per test package (initdb + pg_ctl on a private Unix socket, removed when the
// package's tests end), or the server named by BMCTL_TEST_DATABASE_URL. Each
// test gets its own fresh database.
//
// A package using it calls pgtest.Main from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/localpg"
)

var (
	once       sync.Once
	onceErr    error
	cluster    *localpg.Cluster
	serverURL  string // admin URL of the server databases are created on
	counter    atomic.Int64
	templateMu sync.Mutex
	templateOK bool
	prefix     = fmt.Sprintf("bmctl_test_%d_", os.Getpid())
)

// Main runs the package's tests and then stops and removes the cluster.
func Main(m *testing.M) {
	code := m.Run()
	if cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_ = cluster.Stop(ctx)
		cancel()
		_ = os.RemoveAll(cluster.Dir)
	} else if serverURL != "" {
		dropOwn()
	}
	os.Exit(code)
}

func start() error {
	if u := os.Getenv("BMCTL_TEST_DATABASE_URL"); u != "" {
		serverURL = u
		return nil
	}
	dir, err := os.MkdirTemp("", "bmctl-pgtest-")
	if err != nil {
		return err
	}
	cluster = &localpg.Cluster{Dir: dir, Fast: true}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cluster.Start(ctx); err != nil {
		return err
	}
	serverURL = cluster.URL("postgres")
	return nil
}

// Cluster is the package's throwaway cluster, nil when the tests use
// BMCTL_TEST_DATABASE_URL. Tests that stop and start the server use it.
func Cluster(t testing.TB) *localpg.Cluster {
	ensure(t)
	return cluster
}

func ensure(t testing.TB) {
	t.Helper()
	once.Do(func() { onceErr = start() })
	if onceErr != nil {
		t.Fatalf("test PostgreSQL: %v", onceErr)
	}
}

// withDatabase returns serverURL pointed at database name.
func withDatabase(name string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		panic(err)
	}
	u.Path = "/" + name
	return u.String()
}

func admin(ctx context.Context, sql string) error {
	c, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql)
	return err
}

// EmptyURL returns the URL of a new, empty database, dropped after the test.
func EmptyURL(t testing.TB) string {
	ensure(t)
	return create(t, "")
}

// URL returns the URL of a new database migrated to the latest schema,
// dropped after the test.
func URL(t testing.TB) string {
	ensure(t)
	templateMu.Lock()
	if !templateOK {
		tmpl := prefix + "template"
		if err := admin(context.Background(), "CREATE DATABASE "+tmpl); err != nil {
			templateMu.Unlock()
			t.Fatalf("creating template database: %v", err)
		}
		if err := bmdb.MigrateUp(withDatabase(tmpl)); err != nil {
			templateMu.Unlock()
			t.Fatalf("migrating template database: %v", err)
		}
		templateOK = true
	}
	templateMu.Unlock()
	return create(t, prefix+"template")
}

func create(t testing.TB, template string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d", prefix, counter.Add(1))
	sql := "CREATE DATABASE " + name
	if template != "" {
		sql += " TEMPLATE " + template
	}
	ctx := context.Background()
	if err := admin(ctx, sql); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		_ = admin(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return withDatabase(name)
}

// dropOwn drops what this process created on a shared server.
func dropOwn() {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix+"%")
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, n := range names {
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)")
	}
}

// LogPath is where the cluster's server log is, for failing tests to point at.
func LogPath() string {
	if cluster == nil {
		return ""
	}
	return filepath.Join(cluster.Dir, "postgres.log")
}

// LoginURL returns dbURL for a new login role that is a member of the given
// group roles only (none: a login with no grants), dropped after the test.
// Tests connect as it to show what a role may and may not do; the throwaway
// cluster trusts its Unix socket, so no password is needed.
func LoginURL(t testing.TB, dbURL string, groups ...bmdb.Role) string {
	t.Helper()
	ensure(t)
	login := fmt.Sprintf("%slogin_%d", prefix, counter.Add(1))
	ctx := context.Background()
	if err := admin(ctx, "CREATE ROLE "+login+" LOGIN"); err != nil {
		t.Fatalf("creating login role: %v", err)
	}
	t.Cleanup(func() { _ = admin(context.Background(), "DROP ROLE IF EXISTS "+login) })
	for _, g := range groups {
		if err := admin(ctx, "GRANT "+string(g)+" TO "+login); err != nil {
			t.Fatalf("granting %s: %v", g, err)
		}
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(login)
	return u.String()
}
