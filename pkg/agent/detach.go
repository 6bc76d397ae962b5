package agent

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bmctl/bmctl/pkg/agentproto"
)

// A detached agent gets its state from the process that answered the
// shepherd through a pipe on fd 3, so the private key never touches the disk
// or a command line, and says it is up on a pipe on fd 4.
const (
	stateFD = 3
	readyFD = 4
)

// state is what the answering process hands to the detached one.
type state struct {
	Init agentproto.Init `json:"init"`
	Seed []byte          `json:"seed"`
}

// Spawn says how to start the detached agent: a program (normally this
// binary, re-executed) that calls RunDetached.
type Spawn struct {
	Path string
	Args []string
	// Env is the detached process's environment (nil: this one's).
	Env []string
	// LogFile receives the detached agent's stdout and stderr.
	LogFile string
	// PIDFile, if set, receives the detached agent's pid.
	PIDFile string
}

// Detach answers the shepherd and leaves a detached agent running: it reads
// the init message from stdin, generates the key, starts sp in a new session
// (setsid) with no terminal, stdin on /dev/null and output to sp.LogFile, so
// nothing of the SSH session stays open, hands it the key, waits until it
// says it runs, and only then writes the reply with the public key to stdout.
// Any failure is written to stdout as the reply's error too.
func Detach(ctx context.Context, stdin io.Reader, stdout io.Writer, sp Spawn) error {
	init, err := readInit(ctx, stdin)
	if err != nil {
		return reply(stdout, agentproto.Reply{Init: init, Error: err.Error()}, err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err == nil {
		// Check the init message here, where the shepherd hears about it.
		_, err = New(init, key, Options{})
	}
	if err == nil {
		err = spawn(ctx, sp, state{Init: init, Seed: key.Seed()})
	}
	if err != nil {
		return reply(stdout, agentproto.Reply{Init: init, Error: err.Error()}, err)
	}
	return reply(stdout, agentproto.Reply{Init: init, PublicKey: key.Public().(ed25519.PublicKey)}, nil)
}

func spawn(ctx context.Context, sp Spawn, st state) error {
	logf, err := os.OpenFile(sp.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening agent log: %w", err)
	}
	defer logf.Close()
	stateR, stateW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer stateR.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		stateW.Close()
		return err
	}
	defer readyR.Close()
	// The state is a few KiB, well within a pipe's buffer: written before the
	// child starts, it cannot block.
	err = json.NewEncoder(stateW).Encode(st)
	stateW.Close()
	if err != nil {
		readyW.Close()
		return fmt.Errorf("handing over agent state: %w", err)
	}
	cmd := exec.Command(sp.Path, sp.Args...)
	cmd.Env = sp.Env
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{stateR, readyW} // fds 3 and 4
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close() // the child holds its own copy now
	if err != nil {
		return fmt.Errorf("starting detached agent: %w", err)
	}
	// The child writes "ok" once it holds its key and has checked the init;
	// anything else (it exited, or hangs) is a failed start.
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(readyR).ReadString('\n')
		ready <- line
	}()
	var line string
	select {
	case line = <-ready:
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	if line != "ok\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("detached agent did not start; see %s", sp.LogFile)
	}
	if sp.PIDFile != "" {
		previous := previousAgent(sp)
		if err := os.WriteFile(sp.PIDFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return fmt.Errorf("writing pid file: %w", err)
		}
		// An agent from an earlier takeover holds a key the shepherd no
		// longer records (it starts agents only on machines without one):
		// stop it rather than let it knock until it gives up.
		if previous > 0 {
			_ = syscall.Kill(previous, syscall.SIGTERM)
		}
	}
	// Not waited for: it outlives this process and init reaps it.
	return cmd.Process.Release()
}

// previousAgent is the pid in sp.PIDFile if that process still runs the
// same program with the same arguments (a pid file outlives reboots and
// pids are reused), else 0.
func previousAgent(sp Spawn) int {
	text, err := os.ReadFile(sp.PIDFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(text)))
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0
	}
	want := strings.Join(append([]string{sp.Path}, sp.Args...), "\x00") + "\x00"
	if string(cmdline) != want {
		return 0
	}
	return pid
}

// RunDetached is the detached agent's side of Detach: it takes the state
// from fd 3, says it runs on fd 4 and heart-beats until ctx ends.
func RunDetached(ctx context.Context, opts Options) error {
	var st syscall.Stat_t
	if syscall.Fstat(stateFD, &st) != nil || syscall.Fstat(readyFD, &st) != nil {
		return errors.New("no agent state on fds 3 and 4: the detached mode is started by `bmctl agent` itself")
	}
	stateF := os.NewFile(stateFD, "agent-state")
	readyF := os.NewFile(readyFD, "agent-ready")
	a, err := resume(stateF, opts)
	stateF.Close()
	if err != nil {
		readyF.Close()
		return err
	}
	_, err = io.WriteString(readyF, "ok\n")
	readyF.Close()
	if err != nil {
		return fmt.Errorf("telling the answering process the agent runs: %w", err)
	}
	return a.Run(ctx)
}

func resume(r io.Reader, opts Options) (*Agent, error) {
	var st state
	if err := json.NewDecoder(io.LimitReader(r, MaxInitSize+4096)).Decode(&st); err != nil {
		return nil, fmt.Errorf("reading agent state: %w", err)
	}
	if len(st.Seed) != ed25519.SeedSize {
		return nil, errors.New("agent state holds no ed25519 key")
	}
	return New(st.Init, ed25519.NewKeyFromSeed(st.Seed), opts)
}
