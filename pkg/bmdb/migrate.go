package bmdb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers pgx5://
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bmctl/bmctl/migrations"
)

// ErrDirty means a migration failed half-way; a person must repair the schema
// and then record the version it is really at.
var ErrDirty = errors.New("schema is dirty")

// ErrTooNew means the database has migrations this binary does not know.
var ErrTooNew = errors.New("schema is newer than this bmctl")

// MigrationStatus describes where a database's schema stands.
type MigrationStatus struct {
	Version uint   `json:"version"` // 0: nothing applied
	Dirty   bool   `json:"dirty"`
	Latest  uint   `json:"latest"`
	Pending []uint `json:"pending"`
}

// Versions lists the embedded migration versions in order.
func Versions() []uint {
	var vs []uint
	seen := map[uint]bool{}
	entries, _ := fs.ReadDir(migrations.FS, ".")
	for _, e := range entries {
		n, err := strconv.ParseUint(strings.SplitN(e.Name(), "_", 2)[0], 10, 32)
		if err == nil && !seen[uint(n)] {
			seen[uint(n)] = true
			vs = append(vs, uint(n))
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	return vs
}

// Migrator applies the embedded migrations to one database.
type Migrator struct{ m *migrate.Migrate }

// NewMigrator prepares migrations for the database at url.
func NewMigrator(url string) (*Migrator, error) {
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		return nil, err
	}
	m, err := migrate.NewWithSourceInstance("iofs", src, pgx5URL(url))
	if err != nil {
		return nil, fmt.Errorf("opening database for migrations: %w", err)
	}
	return &Migrator{m: m}, nil
}

// pgx5URL gives golang-migrate's pgx/v5 driver its scheme.
func pgx5URL(url string) string {
	for _, p := range []string{"postgres://", "postgresql://"} {
		if strings.HasPrefix(url, p) {
			return "pgx5://" + strings.TrimPrefix(url, p)
		}
	}
	if !strings.Contains(url, "://") {
		// A keyword/value DSN: golang-migrate needs a URL.
		return "pgx5://?" + strings.ReplaceAll(strings.TrimSpace(url), " ", "&")
	}
	return url
}

// Close releases the migrator's connection.
func (m *Migrator) Close() error {
	serr, derr := m.m.Close()
	return errors.Join(serr, derr)
}

// Status reports the current version, the dirty flag and the pending steps.
func (m *Migrator) Status() (MigrationStatus, error) {
	vs := Versions()
	st := MigrationStatus{Latest: vs[len(vs)-1]}
	v, dirty, err := m.m.Version()
	switch {
	case errors.Is(err, migrate.ErrNilVersion):
	case err != nil:
		return st, err
	default:
		st.Version, st.Dirty = v, dirty
	}
	for _, x := range vs {
		if x > st.Version {
			st.Pending = append(st.Pending, x)
		}
	}
	return st, nil
}

// check refuses to act on a dirty or too-new schema, saying what to do.
func (m *Migrator) check() error {
	st, err := m.Status()
	if err != nil {
		return err
	}
	return st.problem(false)
}

// problem says what is wrong with a schema and what to do about it: dirty,
// newer than this binary, or (when current is required) behind.
func (st MigrationStatus) problem(requireCurrent bool) error {
	switch {
	case st.Dirty:
		return fmt.Errorf("%w at version %d: a migration failed half-way; repair the schema by hand, then run 'bmctl migrate force N' with the version it is really at", ErrDirty, st.Version)
	case st.Version > st.Latest:
		return fmt.Errorf("%w: database is at version %d, this binary knows up to %d; upgrade bmctl", ErrTooNew, st.Version, st.Latest)
	case requireCurrent && st.Version == 0:
		return errors.New("schema is not migrated: run 'bmctl migrate up'")
	case requireCurrent && st.Version < st.Latest:
		return fmt.Errorf("schema is at version %d, %d migration(s) pending: run 'bmctl migrate up'", st.Version, len(Versions())-versionIndex(st.Version))
	}
	return nil
}

// versionIndex is how many embedded migrations are at or below v.
func versionIndex(v uint) int {
	n := 0
	for _, x := range Versions() {
		if x <= v {
			n++
		}
	}
	return n
}

// Up applies every pending migration.
func (m *Migrator) Up() error {
	if err := m.check(); err != nil {
		return err
	}
	if err := m.m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrating up: %w", err)
	}
	return nil
}

// To migrates up or down to version v.
func (m *Migrator) To(v uint) error {
	if err := m.check(); err != nil {
		return err
	}
	if err := m.m.Migrate(v); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrating to version %d: %w", v, err)
	}
	return nil
}

// Down reverts n migrations; n <= 0 reverts all of them.
func (m *Migrator) Down(n int) error {
	if err := m.check(); err != nil {
		return err
	}
	var err error
	if n <= 0 {
		err = m.m.Down()
	} else {
		err = m.m.Steps(-n)
	}
	if err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrating down: %w", err)
	}
	return nil
}

// Force records version v as applied and clean without running anything.
func (m *Migrator) Force(v int) error {
	return m.m.Force(v)
}

// MigrateUp applies every pending migration to the database at url.
func MigrateUp(url string) error {
	m, err := NewMigrator(url)
	if err != nil {
		return err
	}
	defer m.Close()
	return m.Up()
}

// CheckSchema returns an error unless the database's schema is exactly the one
// this binary was built for.
func CheckSchema(url string) error {
	m, err := NewMigrator(url)
	if err != nil {
		return err
	}
	defer m.Close()
	st, err := m.Status()
	if err != nil {
		return err
	}
	return st.problem(true)
}

// CheckSchema is CheckSchema over an open connection: one query instead of a
// migrator's own connection, for commands that start often.
func (c *Conn) CheckSchema(ctx context.Context) error {
	st, err := c.SchemaStatus(ctx)
	if err != nil {
		return err
	}
	return st.problem(true)
}

// SchemaStatus reads the database's schema version over an open connection
// (Pending left empty); version 0 means nothing is applied.
func (c *Conn) SchemaStatus(ctx context.Context) (MigrationStatus, error) {
	return ReadSchemaStatus(ctx, c.Pool)
}

// ReadSchemaStatus is SchemaStatus over any pool or transaction.
func ReadSchemaStatus(ctx context.Context, db DBTX) (MigrationStatus, error) {
	var version int64
	var dirty bool
	err := db.QueryRow(ctx, `SELECT version, dirty FROM schema_migrations LIMIT 1`).Scan(&version, &dirty)
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows) || (errors.As(err, &pe) && pe.Code == "42P01"):
		version, dirty = 0, false
	case err != nil:
		return MigrationStatus{}, fmt.Errorf("reading the schema version: %w", err)
	}
	return MigrationStatus{Version: uint(version), Dirty: dirty, Latest: LatestVersion()}, nil
}

// Err says what is wrong with the schema for this binary, nil if nothing.
func (st MigrationStatus) Err() error { return st.problem(true) }

// Behind says whether the schema only lacks migrations this binary has:
// what bmctl migrate up fixes.
func (st MigrationStatus) Behind() bool { return !st.Dirty && st.Version < st.Latest }

// LatestVersion is the schema version this binary needs: its newest migration.
func LatestVersion() uint {
	vs := Versions()
	return vs[len(vs)-1]
}
