package bmc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Step is one observed step of a power action, timed from its first request.
type Step struct {
	What  string // "Off", "SSH down", "On", "SSH"
	After time.Duration
}

// Report is what a verified power action did: "redfish ForceRestart at
// https://10.1.0.11: Off after 4s, On after 31s, SSH after 52s".
type Report struct {
	Kind    string
	Address string
	// Action is the reset type used, "ForceOff+On", or a note such as
	// "On (found Off)".
	Action string
	Steps  []Step
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s at %s", r.Kind, r.Action, r.Address)
	for i, s := range r.Steps {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s after %s", s.What, roundStep(s.After))
	}
	return b.String()
}

// roundStep keeps a step's time readable: tenths of a second for short ones.
func roundStep(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// StepError is a power action that failed at one step: the report holds the
// steps seen before, Step what was not, Err the cause (the BMC's message, the
// last state seen).
type StepError struct {
	Report Report
	Step   string
	Err    error
}

func (e *StepError) Error() string {
	sep := ": "
	if len(e.Report.Steps) > 0 {
		sep = "; "
	}
	return e.Report.String() + sep + e.Step + ": " + e.Err.Error()
}

func (e *StepError) Unwrap() error { return e.Err }

// Reboot hard-reboots the system behind c and verifies it: the best reset
// the BMC allows (ForceRestart, else PowerCycle, else ForceOff then On),
// then the machine seen going down (power leaving On, or its SSH server at
// sshAddr going away), power On again and SSH answering, each within its
// bound. A machine found Off is powered On. With sshAddr empty the SSH steps
// are left out.
func Reboot(ctx context.Context, c Controller, sshAddr string, b Bounds) (Report, error) {
	v := newVerifier(c, sshAddr, b, "reboot")
	err := v.reboot(ctx)
	return v.report, err
}

func (v *verifier) reboot(ctx context.Context) error {
	st, err := v.c.Status(ctx)
	if err != nil {
		return v.fail("reading the power state", err)
	}
	if st.Power == PowerOff {
		v.report.Action = "On (found Off)"
		return v.powerOn(ctx, st)
	}
	switch {
	case st.Allows(ResetForceRestart) || len(st.Resets) == 0:
		// A BMC that lists no types allows them all (Redfish: no
		// AllowableValues); ForceRestart is the one every BMC has.
		return v.inPlace(ctx, ResetForceRestart)
	case st.Allows(ResetPowerCycle):
		return v.inPlace(ctx, ResetPowerCycle)
	case st.Allows(ResetForceOff) && (st.Allows(ResetOn) || st.Allows(ResetForceOn)):
		v.report.Action = "ForceOff+On"
		if err := v.powerOff(ctx); err != nil {
			return err
		}
		return v.powerOn(ctx, st)
	}
	return v.fail("choosing a reset", fmt.Errorf("%w: the BMC allows %s, none of ForceRestart, PowerCycle, ForceOff then On", ErrNotAllowed, joinResets(st.Resets)))
}

// SwitchOn powers the system On (if it is not) and waits for On and, with
// sshAddr, for SSH to answer.
func SwitchOn(ctx context.Context, c Controller, sshAddr string, b Bounds) (Report, error) {
	v := newVerifier(c, sshAddr, b, "On")
	err := v.switchOn(ctx)
	return v.report, err
}

func (v *verifier) switchOn(ctx context.Context) error {
	st, err := v.c.Status(ctx)
	if err != nil {
		return v.fail("reading the power state", err)
	}
	if st.Power == PowerOn {
		v.report.Action = "On (already On)"
		return nil
	}
	return v.powerOn(ctx, st)
}

// SwitchOff forces the system Off and waits until its BMC reports Off.
func SwitchOff(ctx context.Context, c Controller, b Bounds) (Report, error) {
	v := newVerifier(c, "", b, "ForceOff")
	err := v.switchOff(ctx)
	return v.report, err
}

func (v *verifier) switchOff(ctx context.Context) error {
	st, err := v.c.Status(ctx)
	if err != nil {
		return v.fail("reading the power state", err)
	}
	if st.Power == PowerOff {
		v.report.Action = "ForceOff (already Off)"
		return nil
	}
	return v.powerOff(ctx)
}

func newVerifier(c Controller, sshAddr string, b Bounds, action string) *verifier {
	return &verifier{c: c, ssh: sshAddr, b: b.WithDefaults(), report: Report{Kind: c.Kind(), Address: c.Address(), Action: action}}
}

type verifier struct {
	c      Controller
	ssh    string
	b      Bounds
	report Report
	start  time.Time
}

func (v *verifier) fail(step string, err error) error {
	return &StepError{Report: v.report, Step: step, Err: err}
}

func (v *verifier) mark(what string) {
	v.report.Steps = append(v.report.Steps, Step{What: what, After: time.Since(v.start)})
}

func (v *verifier) reset(ctx context.Context, t ResetType) error {
	if v.start.IsZero() {
		v.start = time.Now()
	}
	if err := v.c.Reset(ctx, t); err != nil {
		return v.fail(string(t)+" request", err)
	}
	return nil
}

// inPlace is a reset that powers the machine down and up by itself.
func (v *verifier) inPlace(ctx context.Context, t ResetType) error {
	v.report.Action = string(t)
	if err := v.reset(ctx, t); err != nil {
		return err
	}
	left := false
	err := v.poll(ctx, v.b.Down, "going down", "Off or SSH going away", func(st Status, sshUp bool) bool {
		switch {
		case st.Power != PowerOn && st.Power != PowerUnknown:
			left = true
			v.mark(string(st.Power))
			return true
		case v.ssh != "" && !sshUp:
			v.mark("SSH down")
			return true
		}
		return false
	})
	if err != nil {
		return err
	}
	if err := v.poll(ctx, v.b.On, "power On", "On", func(st Status, _ bool) bool {
		if st.Power == PowerOn {
			if left {
				v.mark("On")
			}
			return true
		}
		if st.Power != PowerUnknown && !left {
			// SSH went first, then power: count the state change too.
			left = true
			v.mark(string(st.Power))
		}
		return false
	}); err != nil {
		return err
	}
	return v.waitSSH(ctx)
}

func (v *verifier) powerOff(ctx context.Context) error {
	if err := v.reset(ctx, ResetForceOff); err != nil {
		return err
	}
	return v.poll(ctx, v.b.Down, "power Off", "Off", func(st Status, _ bool) bool {
		if st.Power == PowerOff {
			v.mark("Off")
			return true
		}
		return false
	})
}

func (v *verifier) powerOn(ctx context.Context, st Status) error {
	on := ResetOn
	if len(st.Resets) > 0 && !st.Allows(ResetOn) && st.Allows(ResetForceOn) {
		on = ResetForceOn
	}
	if err := v.reset(ctx, on); err != nil {
		return err
	}
	if err := v.poll(ctx, v.b.On, "power On", "On", func(st Status, _ bool) bool {
		if st.Power == PowerOn {
			v.mark("On")
			return true
		}
		return false
	}); err != nil {
		return err
	}
	return v.waitSSH(ctx)
}

func (v *verifier) waitSSH(ctx context.Context) error {
	if v.ssh == "" {
		return nil
	}
	v.waiting("SSH")
	deadline := time.Now().Add(v.b.SSH)
	for {
		if sshAnswers(ctx, v.ssh, v.b.Poll) {
			v.mark("SSH")
			return nil
		}
		if err := v.pause(ctx, deadline); err != nil {
			if err == errBound {
				return v.fail("SSH", fmt.Errorf("%s did not answer within %s", v.ssh, v.b.SSH))
			}
			return v.fail("SSH", fmt.Errorf("%s did not answer: %w", v.ssh, err))
		}
	}
}

// errBound marks a step that did not happen within its bound.
var errBound = errors.New("bound reached")

// pause waits one poll interval, or fails when the deadline or ctx comes.
func (v *verifier) pause(ctx context.Context, deadline time.Time) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !time.Now().Before(deadline) {
		return errBound
	}
	t := time.NewTimer(min(v.b.Poll, time.Until(deadline)))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// poll reads the power state (and SSH, when there is an address) until done
// says so or the bound passes. A BMC that fails to answer while its system
// reboots is normal; the last error goes into the cause.
// waiting tells Progress what is awaited now.
func (v *verifier) waiting(what string) {
	if v.b.Progress != nil {
		v.b.Progress(v.report.String() + "; waiting for " + what)
	}
}

func (v *verifier) poll(ctx context.Context, bound time.Duration, step, what string, done func(st Status, sshUp bool) bool) error {
	v.waiting(what)
	deadline := time.Now().Add(bound)
	var last Status
	var lastErr error
	for {
		st, err := v.c.Status(ctx)
		if err == nil {
			last, lastErr = st, nil
			up := v.ssh == "" || sshAnswers(ctx, v.ssh, v.b.Poll)
			if done(st, up) {
				return nil
			}
		} else {
			lastErr = err
		}
		if perr := v.pause(ctx, deadline); perr != nil {
			cause := fmt.Sprintf("%s not seen within %s (last power state %s)", what, bound, stateName(last.Power))
			if lastErr != nil {
				cause += "; last BMC error: " + lastErr.Error()
			}
			if perr != errBound {
				return v.fail(step, fmt.Errorf("%s: %w", cause, perr))
			}
			return v.fail(step, errors.New(cause))
		}
	}
}

func stateName(p PowerState) string {
	if p == PowerUnknown {
		return "unknown"
	}
	return string(p)
}

func joinResets(ts []ResetType) string {
	if len(ts) == 0 {
		return "no reset types"
	}
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

// sshAnswers reports whether an SSH server at addr sends its banner within
// timeout: a port that accepts connections is not enough, a booting machine's
// firewall or a half-started sshd can do that.
func sshAnswers(ctx context.Context, addr string, timeout time.Duration) bool {
	timeout = max(timeout, time.Second)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetReadDeadline(dl)
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-")
}
