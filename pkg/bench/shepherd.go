package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// shepherdRSS runs `bmctl shepherd run` (bin) with 32 workers in each of the
// AgentStart and Recovery loops against the seeded fleet for d, and returns
// its peak resident set and how many claims it made meanwhile. The seeded
// machines' addresses lead nowhere, so every claim ends in a failure and a
// backoff: the loops run flat out, which is what memory must survive.
func shepherdRSS(ctx context.Context, conn *bmdb.Conn, bin, url string, d time.Duration) (peakKB int64, claims int, err error) {
	dir, err := os.MkdirTemp("", "bmctl-bench-shepherd-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	inv := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inv, []byte("name: seed\nreboot_command: \"true\"\nwait_for_ssh: false\nmachines: []\n"), 0o600); err != nil {
		return 0, 0, err
	}
	var before int
	if err := conn.Pool.QueryRow(ctx, `SELECT count(*) FROM work_history WHERE event = 'Started'`).Scan(&before); err != nil {
		return 0, 0, err
	}
	cmd := exec.CommandContext(ctx, bin, "--db", url, "--log-level", "error", "shepherd", "run",
		"--provider", "static", "--inventory", inv, "--loops", "agentstart,recovery",
		"--agentstart-parallelism", "32", "--recovery-parallelism", "32",
		"--agentstart-rate", "0", "--recovery-rate", "0",
		"--agent-endpoint", "https://127.0.0.1:9", "--ssh-dial-timeout", "2s",
		"--ssh-key", filepath.Join(dir, "shepherd_ed25519"))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	time.Sleep(d)
	peakKB, rerr := peakRSS(cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		err = fmt.Errorf("shepherd did not stop within a minute of SIGINT")
	}
	if err != nil {
		return 0, 0, fmt.Errorf("shepherd run: %v: %s", err, lastLines(out.String(), 3))
	}
	if rerr != nil {
		return 0, 0, rerr
	}
	var after int
	if err := conn.Pool.QueryRow(ctx, `SELECT count(*) FROM work_history WHERE event = 'Started'`).Scan(&after); err != nil {
		return 0, 0, err
	}
	return peakKB, after - before, nil
}

// peakRSS is the process's high-water resident set (VmHWM) in kB.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM for process %d", pid)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
