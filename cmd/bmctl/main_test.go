package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/bmctl/bmctl/internal/pgtest"
)

// The one TestMain of package main: every command test shares the package's
// throwaway PostgreSQL cluster.
func TestMain(m *testing.M) { pgtest.Main(m) }

// result is what one in-process bmctl invocation printed and returned.
type result struct {
	code     int
	out, err string
}

// bmctl runs one command line in process, as main would, with captured output.
func bmctl(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, streams{In: strings.NewReader(stdin), Out: &out, Err: &errb})
	return result{code: code, out: out.String(), err: errb.String()}
}
