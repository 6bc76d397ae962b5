package bmdb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Role is one of BMDB's group roles (NOLOGIN), each with the least one
// component needs; migration 0013 defines what each holds (bmdb_grants).
type Role string

const (
	// RoleViewer reads everything the views read and holds a listener lease.
	RoleViewer Role = "bmctl_viewer"
	// RoleOperator is the viewer plus the operator actions.
	RoleOperator Role = "bmctl_operator"
	// RoleShepherd runs sessions, claims and releases work, writes the tags
	// its loops own and appends history.
	RoleShepherd Role = "bmctl_shepherd"
	// RoleEndpoint records heartbeats and hardware reports of machines whose
	// started agent's key matches, through two functions, and nothing else.
	RoleEndpoint Role = "bmctl_endpoint"
)

// Roles lists the group roles.
var Roles = []Role{RoleViewer, RoleOperator, RoleShepherd, RoleEndpoint}

// ParseRole accepts a role's name with or without the "bmctl_" prefix.
func ParseRole(s string) (Role, error) {
	r := Role("bmctl_" + strings.TrimPrefix(strings.ToLower(s), "bmctl_"))
	if !slices.Contains(Roles, r) {
		return "", fmt.Errorf("unknown role %q (want one of viewer, operator, shepherd, endpoint)", s)
	}
	return r, nil
}

// column is the role's column in bmdb_grants.
func (r Role) column() string { return strings.TrimPrefix(string(r), "bmctl_") }

// ApplyRoles creates the group roles if missing and makes their privileges
// in this database exactly what bmdb_grants says. Idempotent; run it after
// every migration (migrate up does) and whenever grants were changed by hand.
func ApplyRoles(ctx context.Context, db DBTX) error {
	if _, err := db.Exec(ctx, `SELECT bmdb_apply_roles()`); err != nil {
		return fmt.Errorf("applying roles (run as the schema owner, with CREATEROLE if the roles do not exist yet): %w", err)
	}
	return nil
}

// GrantRole makes login a member of role, so that it holds role's privileges.
func GrantRole(ctx context.Context, db DBTX, login string, role Role) error {
	if !slices.Contains(Roles, role) {
		return fmt.Errorf("unknown role %q", role)
	}
	var exists bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, login).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("no database role %q: create it first (CREATE ROLE %s LOGIN)", login, pgx.Identifier{login}.Sanitize())
	}
	if _, err := db.Exec(ctx, fmt.Sprintf("GRANT %s TO %s", pgx.Identifier{string(role)}.Sanitize(), pgx.Identifier{login}.Sanitize())); err != nil {
		return fmt.Errorf("granting %s to %s: %w", role, login, err)
	}
	return nil
}

// MissingGrant is a privilege a role's component needs that the connected
// user does not hold.
type MissingGrant struct {
	Kind, Object, Privilege string
}

func (m MissingGrant) String() string { return m.Privilege + " on " + m.Kind + " " + m.Object }

// MissingGrants lists what the connected user lacks of role's privileges.
func MissingGrants(ctx context.Context, db DBTX, role Role) ([]MissingGrant, error) {
	rows, err := db.Query(ctx, `SELECT object_kind, object_name, privilege FROM bmdb_missing_grants($1)`, role.column())
	if err != nil {
		return nil, fmt.Errorf("checking the database role's grants: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (MissingGrant, error) {
		var m MissingGrant
		return m, r.Scan(&m.Kind, &m.Object, &m.Privilege)
	})
}

// ErrMissingGrant means the connected role lacks a privilege its component needs.
var ErrMissingGrant = errors.New("missing grant")

// CheckGrants returns an error naming the first privilege of role that the
// connected user lacks, and how to grant it: a component calls it at start
// instead of failing on its first write an hour later.
func CheckGrants(ctx context.Context, db DBTX, role Role) error {
	missing, err := MissingGrants(ctx, db, role)
	if err != nil || len(missing) == 0 {
		return err
	}
	var user string
	if err := db.QueryRow(ctx, `SELECT current_user`).Scan(&user); err != nil {
		return err
	}
	more := ""
	if len(missing) > 1 {
		more = fmt.Sprintf(" (and %d more)", len(missing)-1)
	}
	return fmt.Errorf("%w: database role %q lacks %s%s, which %s needs: run 'bmctl db roles grant %s %s' as the schema owner",
		ErrMissingGrant, user, missing[0], more, role, user, role.column())
}

// CheckGrants is CheckGrants over the connection's pool.
func (c *Conn) CheckGrants(ctx context.Context, role Role) error {
	return CheckGrants(ctx, c.Pool, role)
}

// UngrantedObjects lists the tables, views, sequences and functions of the
// schema that bmdb_grants has no decision for: an object added by a migration
// that forgot its row, which no component role could use.
func UngrantedObjects(ctx context.Context, db DBTX) ([]string, error) {
	rows, err := db.Query(ctx, `
		SELECT k || ' ' || n FROM (
			SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END AS k, c.relname::text AS n
			FROM pg_class c
			WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
			UNION ALL
			SELECT 'function', p.oid::regprocedure::text
			FROM pg_proc p
			WHERE p.pronamespace = current_schema()::regnamespace
			  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
		) o
		WHERE NOT EXISTS (SELECT 1 FROM bmdb_grants g WHERE g.object_kind = o.k AND g.object_name = o.n)
		ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// PruneHistory deletes the work history recorded before before and records
// the prune (its time, cutoff, count and who did it) in work_history_prunes.
// Only the schema owner can: history is append-only for every other role.
func PruneHistory(ctx context.Context, db DBTX, before time.Time, actor string) (int64, error) {
	// One statement: the delete and its record commit together.
	var n int64
	err := db.QueryRow(ctx, `
		WITH d AS (DELETE FROM work_history WHERE event_at < $1 RETURNING 1)
		INSERT INTO work_history_prunes (pruned_before, pruned_events, pruned_by)
		SELECT $1, count(*), current_user || CASE WHEN $2 = '' THEN '' ELSE ' as ' || $2 END FROM d
		RETURNING pruned_events`, before, actor).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("pruning history (only the schema owner can): %w", err)
	}
	return n, nil
}
