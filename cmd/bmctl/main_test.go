package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/bmctl/bmctl/internal/pgtest"
)

// The one TestMain of package main: every command test shares the package's
// throwaway PostgreSQL cluster.
// With BMCTL_TEST_MAIN=1 the test binary is bmctl itself, so tests can run
// it as a separate process (the demo, kill -9) without building it.
func TestMain(m *testing.M) {
	if os.Getenv("BMCTL_TEST_MAIN") == "1" {
		main()
		return
	}
	pgtest.Main(m)
}

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
