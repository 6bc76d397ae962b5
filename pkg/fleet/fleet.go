// Package fleet is the read side of BMDB shared by every view (the bmctl
// inspection commands and the `machines watch` TUI): resolving machine
// references, the derived machine state, machine lists and details, work
// history (with a LISTEN/NOTIFY follower), sessions, backoffs and fleet
// statistics. It only reads: operator actions live in pkg/ops. Filtering, sorting and paging happen in SQL so that views cost
// what they show, not what the fleet holds.
package fleet

import (
	"encoding/hex"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// DB is what queries run on: a pool, a connection or a transaction.
type DB = bmdb.DBTX

// ShortID is the first eight hex digits of a machine or session id, enough to
// name one in a fleet of tens of thousands (and accepted back as a prefix).
func ShortID(id uuid.UUID) string { return hex.EncodeToString(id[:4]) }
