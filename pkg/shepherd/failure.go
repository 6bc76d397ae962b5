package shepherd

import (
	"context"
	"errors"
)

// FailureClass groups the causes of failed work, for metrics and for
// per-failure-mode backoff overrides.
type FailureClass string

const (
	FailDial     FailureClass = "dial"     // the machine's SSH server could not be reached or refused us
	FailAuth     FailureClass = "auth"     // the machine did not accept the shepherd's SSH key
	FailHostKey  FailureClass = "host_key" // the machine presented another host key than the pinned one
	FailUpload   FailureClass = "upload"   // the agent binary could not be uploaded
	FailExec     FailureClass = "exec"     // the agent could not be run or exited non-zero
	FailReply    FailureClass = "reply"    // the agent's reply was malformed or wrong
	FailTimeout  FailureClass = "timeout"  // a step took longer than its bound
	FailProvider FailureClass = "provider" // the provider failed (reboot, lookup)
	FailMachine  FailureClass = "machine"  // BMDB's record of the machine is unusable (no address, unknown provider)
	FailInternal FailureClass = "internal" // the shepherd itself failed (BMDB, local files)
	FailOther    FailureClass = "other"
)

// failure is an error with its class.
type failure struct {
	class FailureClass
	err   error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// fail classifies err; a deadline exceeded anywhere below counts as a timeout.
func fail(class FailureClass, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		class = FailTimeout
	}
	return &failure{class: class, err: err}
}

// ClassOf returns the failure class of err, FailOther if it has none.
func ClassOf(err error) FailureClass {
	var f *failure
	if errors.As(err, &f) {
		return f.class
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return FailTimeout
	}
	return FailOther
}
