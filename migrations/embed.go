// Package migrations holds BMDB's schema as numbered golang-migrate steps,
// embedded into the binary.
package migrations

import "embed"

// FS holds the *.up.sql and *.down.sql files.
//
//go:embed *.sql
var FS embed.FS
