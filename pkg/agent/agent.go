// Package agent is what runs on a machine once the shepherd has taken it
// over: it answers the shepherd's init message with a fresh ed25519 public
// key, then heart-beats to the endpoint with that key until the machine is
// rebooted, sending a hardware report on first contact.
//
// Takeover and Run run the agent in process (simulated machines, the demo);
// Detach and RunDetached are the same agent as `bmctl agent` runs it on a
// real machine, in a process of its own that outlives the SSH session.
package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/pkg/agentproto"
	"github.com/bmctl/bmctl/pkg/heartbeat"
)

// ErrSuperseded means the endpoint refused every heartbeat for
// Options.GiveUpAfter: another agent holds the machine's key now (or the
// machine was recovered), so this one stops instead of knocking forever.
var ErrSuperseded = errors.New("endpoint has refused this agent's key for too long; another agent has taken over")

// Options tune an agent. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Interval is the heartbeat period until the endpoint names one
	// (default 30s; the endpoint's answer wins).
	Interval time.Duration
	// GiveUpAfter: refused continuously this long, the agent stops (default
	// 30 min, Recovery's no-heartbeat-after-start threshold).
	GiveUpAfter time.Duration
	// HardwareRoot is where /proc and /sys are read from (default "/").
	HardwareRoot string
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Interval <= 0 {
		o.Interval = 30 * time.Second
	}
	if o.GiveUpAfter <= 0 {
		o.GiveUpAfter = 30 * time.Minute
	}
	if o.HardwareRoot == "" {
		o.HardwareRoot = "/"
	}
	return o
}

// Agent heart-beats for one machine with one key.
type Agent struct {
	init agentproto.Init
	key  ed25519.PrivateKey
	// clients has one client per endpoint replica; cur is the one in use,
	// home the one the agent started at, and left when it moved away.
	clients []*heartbeat.Client
	cur     int
	home    int
	left    time.Time
	opts    Options
	log     *slog.Logger
}

// MaxInitSize caps the init message read from the shepherd.
const MaxInitSize = 64 << 10

// ReadInit reads one init message and checks it names a machine.
func ReadInit(r io.Reader) (agentproto.Init, error) {
	var init agentproto.Init
	if err := json.NewDecoder(io.LimitReader(r, MaxInitSize)).Decode(&init); err != nil {
		return init, fmt.Errorf("reading init message on stdin: %w", err)
	}
	if _, err := uuid.Parse(init.MachineID); err != nil {
		return init, fmt.Errorf("init message: machine_id %q is not a UUID", init.MachineID)
	}
	return init, nil
}

// readInit is ReadInit that gives up when ctx ends (the reader is left to
// its EOF, which a closed session delivers).
func readInit(ctx context.Context, r io.Reader) (agentproto.Init, error) {
	type result struct {
		init agentproto.Init
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		init, err := ReadInit(r)
		ch <- result{init, err}
	}()
	select {
	case res := <-ch:
		return res.init, res.err
	case <-ctx.Done():
		return agentproto.Init{}, fmt.Errorf("waiting for the init message: %w", context.Cause(ctx))
	}
}

// New makes an agent for init that authenticates with key.
func New(init agentproto.Init, key ed25519.PrivateKey, opts Options) (*Agent, error) {
	opts = opts.withDefaults()
	var clients []*heartbeat.Client
	home := mrand.IntN(len(init.URLs()))
	for _, url := range init.URLs() {
		client, err := heartbeat.NewClient(url, []byte(init.EndpointCA), key, init.MachineID)
		if err != nil {
			return nil, fmt.Errorf("init message: %w", err)
		}
		clients = append(clients, client)
	}
	return &Agent{
		init:    init,
		key:     key,
		clients: clients,
		// Agents start spread over the replicas, so they share the load.
		cur:  home,
		home: home,
		opts: opts,
		log:  opts.Logger.With("machine", init.MachineID),
	}, nil
}

// Takeover answers the shepherd in process: it reads the init message from
// stdin, makes an agent with a new key and writes the reply to stdout. The
// caller then runs the agent.
func Takeover(ctx context.Context, stdin io.Reader, stdout io.Writer, opts Options) (*Agent, error) {
	init, err := readInit(ctx, stdin)
	if err != nil {
		return nil, reply(stdout, agentproto.Reply{Init: init, Error: err.Error()}, err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, reply(stdout, agentproto.Reply{Init: init, Error: err.Error()}, err)
	}
	a, err := New(init, key, opts)
	if err != nil {
		return nil, reply(stdout, agentproto.Reply{Init: init, Error: err.Error()}, err)
	}
	if err := reply(stdout, a.Reply(), nil); err != nil {
		return nil, err
	}
	return a, nil
}

// reply writes rep and returns cause, or the write's failure.
func reply(w io.Writer, rep agentproto.Reply, cause error) error {
	if err := json.NewEncoder(w).Encode(rep); err != nil {
		return fmt.Errorf("writing reply: %w", err)
	}
	return cause
}

// Reply is the answer to the shepherd: its init echoed and the public key.
func (a *Agent) Reply() agentproto.Reply {
	return agentproto.Reply{Init: a.init, PublicKey: a.key.Public().(ed25519.PublicKey)}
}

// PublicKey is the key the agent authenticates with.
func (a *Agent) PublicKey() ed25519.PublicKey { return a.key.Public().(ed25519.PublicKey) }

// HeartbeatOnce sends one heartbeat now and returns the endpoint's refusal
// (a *heartbeat.StatusError) or failure, if any: for checks and debugging.
func (a *Agent) HeartbeatOnce(ctx context.Context) error {
	_, err := a.clients[a.cur].Send(ctx, heartbeat.Request{MachineID: a.init.MachineID})
	return err
}

// moveOn switches to the next endpoint replica after a failure that another
// replica may not share: not a refusal of the key (every replica reads the
// same BMDB) and not this key's rate limit (moving would dodge it).
func (a *Agent) moveOn(err error) {
	var se *heartbeat.StatusError
	if len(a.clients) < 2 || errors.As(err, &se) && (se.Code == http.StatusForbidden || se.Code == http.StatusTooManyRequests) {
		return
	}
	if a.cur == a.home {
		a.left = time.Now()
	}
	a.cur = (a.cur + 1) % len(a.clients)
	a.log.Info("moving to another endpoint", "endpoint", a.init.URLs()[a.cur])
}

// homeAfter is how many intervals an agent stays away from its home
// replica before trying it again: after a replica's restart (a rolling
// upgrade) its agents come back, so the replicas share the load again.
const homeAfter = 10

// goHome tries the home replica for the next heartbeat when the agent has
// been away from it long enough; should it still fail, moveOn leaves again.
func (a *Agent) goHome(interval time.Duration) {
	if a.cur != a.home && time.Since(a.left) >= homeAfter*interval {
		a.cur = a.home
		a.log.Info("trying the home endpoint again", "endpoint", a.init.URLs()[a.cur])
	}
}

// Run heart-beats until ctx ends (returning nil) or the endpoint has refused
// the key for GiveUpAfter (ErrSuperseded). Failures are retried with
// exponential backoff capped at the interval, so an endpoint coming back is
// heard from within one interval; each failure is logged with its cause.
// With endpoint replicas, the retry after a failure goes to the next one.
func (a *Agent) Run(ctx context.Context) error {
	defer func() {
		for _, c := range a.clients {
			c.Close()
		}
	}()
	interval := a.opts.Interval
	var (
		hw           *heartbeat.HardwareReport
		failures     int
		refusedSince time.Time
		everAccepted bool
	)
	a.log.Info("agent running", "endpoint", a.init.URLs()[a.cur], "endpoints", len(a.clients))
	for {
		req := heartbeat.Request{MachineID: a.init.MachineID}
		if hw == nil {
			// Collected until the first accepted heartbeat carries it.
			r := CollectHardware(a.opts.HardwareRoot)
			req.Hardware = &r
		}
		resp, err := a.clients[a.cur].Send(ctx, req)
		if ctx.Err() != nil {
			a.log.Info("agent stopping", "cause", context.Cause(ctx))
			return nil
		}
		var wait time.Duration
		if err == nil {
			switch {
			case !everAccepted:
				a.log.Info("first heartbeat accepted", "after_failures", failures)
			case failures > 0:
				a.log.Info("heartbeat accepted again", "after_failures", failures)
			}
			if req.Hardware != nil {
				hw = req.Hardware
				a.log.Info("hardware reported", "cpus", hw.CPUCount, "memory_bytes", hw.MemoryBytes, "disks", len(hw.Disks), "nics", len(hw.NICs))
			}
			failures, refusedSince, everAccepted = 0, time.Time{}, true
			if resp.IntervalMillis > 0 {
				interval = clamp(time.Duration(resp.IntervalMillis)*time.Millisecond, 100*time.Millisecond, time.Hour)
			}
			// Early rather than late, spread so agents started together
			// drift apart.
			wait = interval - time.Duration(mrand.Int64N(int64(interval/10)+1))
			a.goHome(interval)
		} else {
			failures++
			wait = retryWait(failures, interval)
			var se *heartbeat.StatusError
			if errors.As(err, &se) && se.Code == http.StatusForbidden {
				if refusedSince.IsZero() {
					refusedSince = time.Now()
				} else if time.Since(refusedSince) >= a.opts.GiveUpAfter {
					a.log.Error("giving up", "cause", err, "refused_for", time.Since(refusedSince).Round(time.Second))
					return ErrSuperseded
				}
			} else {
				refusedSince = time.Time{}
			}
			if errors.As(err, &se) && se.Code == http.StatusTooManyRequests {
				wait = interval
			}
			if !everAccepted && !refusedSince.IsZero() && time.Since(refusedSince) < 10*time.Second {
				// Expected right after takeover: the shepherd records the
				// key only once it has read the reply.
				a.log.Info("endpoint does not know this key yet; retrying", "retry_in", wait.Round(time.Millisecond))
			} else {
				a.log.Warn("heartbeat failed", "cause", err, "failures", failures, "retry_in", wait.Round(time.Millisecond))
			}
			a.moveOn(err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			a.log.Info("agent stopping", "cause", context.Cause(ctx))
			return nil
		case <-t.C:
		}
	}
}

// retryWait is the wait after the n-th failure in a row: from a second (or
// the interval if shorter) doubling up to the interval, with jitter so a
// fleet does not return to a recovered endpoint in one wave.
func retryWait(n int, interval time.Duration) time.Duration {
	d := min(time.Second, interval)
	for i := 1; i < n && d < interval; i++ {
		d *= 2
	}
	d = min(d, interval)
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

func clamp(d, lo, hi time.Duration) time.Duration {
	return max(lo, min(d, hi))
}
