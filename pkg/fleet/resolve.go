package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

var (
	// ErrUnknownMachine means no machine matches a reference.
	ErrUnknownMachine = errors.New("no such machine")
	// ErrInvalidMachineRef means a reference cannot name any machine (empty,
	// or shaped like a UUID but not one).
	ErrInvalidMachineRef = errors.New("invalid machine reference")
)

// Candidate is one of the machines an ambiguous reference matches.
type Candidate struct {
	ID         uuid.UUID `json:"machine_id"`
	Provider   string    `json:"provider"`
	ProviderID string    `json:"provider_id"`
}

func (c Candidate) String() string {
	if c.Provider == "" {
		return c.ID.String()
	}
	return fmt.Sprintf("%s (%s %s)", c.ID, c.Provider, c.ProviderID)
}

// AmbiguousError means a reference matches more than one machine.
type AmbiguousError struct {
	Ref        string
	Candidates []Candidate // at most maxCandidates
	More       bool        // more matched than are listed
}

const maxCandidates = 5

func (e *AmbiguousError) Error() string {
	names := make([]string, len(e.Candidates))
	for i, c := range e.Candidates {
		names[i] = c.String()
	}
	more := ""
	if e.More {
		more = " and more"
	}
	return fmt.Sprintf("machine %q is ambiguous, it matches %s%s; give more of the UUID", e.Ref, strings.Join(names, ", "), more)
}

// ResolveOptions widen what a reference may name.
type ResolveOptions struct {
	// WithHistory also accepts machines that no longer exist but have work
	// history (for `history` of a deleted machine).
	WithHistory bool
}

// Resolve turns what an operator typed into a machine id. A reference is, in
// this order: a full UUID; a provider id (exact, across providers: an exact
// name wins over a prefix); a prefix of the UUID's hex digits (dashes
// optional). It fails with ErrInvalidMachineRef, ErrUnknownMachine or an
// *AmbiguousError that lists the candidates.
func Resolve(ctx context.Context, db DB, ref string, o ResolveOptions) (uuid.UUID, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return uuid.Nil, fmt.Errorf("%w: empty; give a machine UUID, UUID prefix or provider id", ErrInvalidMachineRef)
	}
	if !utf8.ValidString(ref) || strings.ContainsRune(ref, 0) {
		// PostgreSQL text holds neither; no machine is named so (FuzzResolve).
		return uuid.Nil, fmt.Errorf("%w: %q is not valid UTF-8 text without NUL", ErrInvalidMachineRef, ref)
	}
	if looksLikeFullUUID(ref) {
		id, err := uuid.Parse(ref)
		if err != nil {
			return uuid.Nil, fmt.Errorf("%w: %q is not a valid UUID", ErrInvalidMachineRef, ref)
		}
		exists, err := machineKnown(ctx, db, id, o)
		if err != nil {
			return uuid.Nil, err
		}
		if !exists {
			return uuid.Nil, fmt.Errorf("%w: %s", ErrUnknownMachine, id)
		}
		return id, nil
	}

	rows, err := db.Query(ctx, `
		SELECT machine_id, provider, provider_id FROM machine_provided
		WHERE provider_id = $1 ORDER BY provider LIMIT $2`, ref, maxCandidates+1)
	if err != nil {
		return uuid.Nil, err
	}
	byProviderID, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Candidate])
	if err != nil {
		return uuid.Nil, err
	}
	if len(byProviderID) == 1 {
		return byProviderID[0].ID, nil
	}
	if len(byProviderID) > 1 {
		return uuid.Nil, ambiguous(ref, byProviderID)
	}

	lo, hi, ok := prefixRange(ref)
	if !ok {
		return uuid.Nil, fmt.Errorf("%w: %q is not a UUID, a UUID prefix or a known provider id", ErrUnknownMachine, ref)
	}
	q := `
		SELECT m.machine_id, coalesce(p.provider, ''), coalesce(p.provider_id, '')
		FROM machines m LEFT JOIN machine_provided p ON p.machine_id = m.machine_id
		WHERE m.machine_id BETWEEN $1 AND $2
		ORDER BY m.machine_id LIMIT $3`
	if o.WithHistory {
		// Machines known only from history come from the history index, one
		// id at a time (DISTINCT would read every event of every match).
		q = `
		WITH RECURSIVE known AS (
			(SELECT machine_id FROM work_history WHERE machine_id BETWEEN $1 AND $2 ORDER BY machine_id LIMIT 1)
			UNION ALL
			SELECT (SELECT machine_id FROM work_history WHERE machine_id > k.machine_id AND machine_id <= $2 ORDER BY machine_id LIMIT 1)
			FROM known k WHERE k.machine_id IS NOT NULL
		), ids AS (
			SELECT machine_id FROM machines WHERE machine_id BETWEEN $1 AND $2
			UNION
			(SELECT machine_id FROM known WHERE machine_id IS NOT NULL LIMIT $3)
		)
		SELECT ids.machine_id, coalesce(p.provider, ''), coalesce(p.provider_id, '')
		FROM ids LEFT JOIN machine_provided p ON p.machine_id = ids.machine_id
		ORDER BY ids.machine_id LIMIT $3`
	}
	rows, err = db.Query(ctx, q, lo, hi, maxCandidates+1)
	if err != nil {
		return uuid.Nil, err
	}
	byPrefix, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Candidate])
	if err != nil {
		return uuid.Nil, err
	}
	switch len(byPrefix) {
	case 0:
		return uuid.Nil, fmt.Errorf("%w: nothing has the UUID prefix or provider id %q", ErrUnknownMachine, ref)
	case 1:
		return byPrefix[0].ID, nil
	}
	return uuid.Nil, ambiguous(ref, byPrefix)
}

func ambiguous(ref string, cs []Candidate) error {
	e := &AmbiguousError{Ref: ref, Candidates: cs}
	if len(cs) > maxCandidates {
		e.Candidates, e.More = cs[:maxCandidates], true
	}
	return e
}

func machineKnown(ctx context.Context, db DB, id uuid.UUID, o ResolveOptions) (bool, error) {
	q := `SELECT EXISTS (SELECT 1 FROM machines WHERE machine_id = $1)`
	if o.WithHistory {
		q = `SELECT EXISTS (SELECT 1 FROM machines WHERE machine_id = $1) OR EXISTS (SELECT 1 FROM work_history WHERE machine_id = $1)`
	}
	var ok bool
	err := db.QueryRow(ctx, q, id).Scan(&ok)
	return ok, err
}

// looksLikeFullUUID says whether ref is meant as a whole UUID: 36 characters
// with dashes where a UUID has them, or a braced/urn form.
func looksLikeFullUUID(ref string) bool {
	if strings.HasPrefix(strings.ToLower(ref), "urn:uuid:") || strings.HasPrefix(ref, "{") {
		return true
	}
	return len(ref) == 36 && ref[8] == '-' && ref[13] == '-' && ref[18] == '-' && ref[23] == '-'
}

// prefixRange returns the smallest and largest UUIDs that start with the hex
// digits of ref (dashes ignored), or false if ref is not such a prefix.
func prefixRange(ref string) (lo, hi uuid.UUID, ok bool) {
	hex := strings.ToLower(strings.ReplaceAll(ref, "-", ""))
	if hex == "" || len(hex) > 32 {
		return lo, hi, false
	}
	for _, c := range hex {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return lo, hi, false
		}
	}
	pad := 32 - len(hex)
	lo = uuid.MustParse(hex + strings.Repeat("0", pad))
	hi = uuid.MustParse(hex + strings.Repeat("f", pad))
	return lo, hi, true
}

// Complete lists machines whose UUID or provider id starts with prefix, for
// shell completion: UUID matches first (an index range), then provider ids;
// at most limit of each. With WithHistory and no live match, machines known
// only from history.
func Complete(ctx context.Context, db DB, prefix string, limit int, o ResolveOptions) (byID, byProviderID []Candidate, err error) {
	lo, hi, isHex := prefixRange(prefix)
	if prefix == "" {
		lo, hi, isHex = uuid.Nil, uuid.Max, true
	}
	if isHex {
		rows, err := db.Query(ctx, `
			SELECT m.machine_id, coalesce(p.provider, ''), coalesce(p.provider_id, '')
			FROM machines m LEFT JOIN machine_provided p ON p.machine_id = m.machine_id
			WHERE m.machine_id BETWEEN $1 AND $2 ORDER BY m.machine_id LIMIT $3`, lo, hi, limit)
		if err != nil {
			return nil, nil, err
		}
		if byID, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Candidate]); err != nil {
			return nil, nil, err
		}
		if len(byID) == 0 && o.WithHistory && prefix != "" {
			// One index probe per machine, as in Resolve.
			rows, err := db.Query(ctx, `
				WITH RECURSIVE known AS (
					(SELECT machine_id FROM work_history WHERE machine_id BETWEEN $1 AND $2 ORDER BY machine_id LIMIT 1)
					UNION ALL
					SELECT (SELECT machine_id FROM work_history WHERE machine_id > k.machine_id AND machine_id <= $2 ORDER BY machine_id LIMIT 1)
					FROM known k WHERE k.machine_id IS NOT NULL
				)
				SELECT machine_id, '', '' FROM known WHERE machine_id IS NOT NULL LIMIT $3`, lo, hi, limit)
			if err != nil {
				return nil, nil, err
			}
			if byID, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Candidate]); err != nil {
				return nil, nil, err
			}
		}
	}
	if prefix == "" {
		return byID, nil, nil
	}
	rows, err := db.Query(ctx, `
		SELECT machine_id, provider, provider_id FROM machine_provided
		WHERE starts_with(provider_id, $1) ORDER BY provider_id, provider LIMIT $2`, prefix, limit)
	if err != nil {
		return nil, nil, err
	}
	byProviderID, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Candidate])
	return byID, byProviderID, err
}
