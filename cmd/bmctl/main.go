// Command bmctl runs and inspects a fleet of bare-metal servers kept in BMDB.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}))
}

// run executes one bmctl command line and returns the exit code: 0 ok,
// 1 failure, 2 usage.
func run(ctx context.Context, args []string, io streams) int {
	root := newRootCmd(io)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(io.Err, "bmctl: "+oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// usageError marks a command line that was wrong rather than a command that failed.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
