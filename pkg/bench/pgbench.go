package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bmctl/bmctl/pkg/localpg"
)

// pgbenchTarget is where pgbench connects: the cluster's socket, or a URL.
type pgbenchTarget struct {
	url            string
	host, user, db string
}

func (p pgbenchTarget) args() []string {
	if p.url != "" {
		return []string{p.url}
	}
	args := []string{"-h", p.host, p.db}
	if p.user != "" {
		args = append([]string{"-U", p.user}, args...)
	}
	return args
}

func pgbenchPath() (string, error) {
	bin, err := localpg.FindBinDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(bin, "pgbench"), nil
}

func (p pgbenchTarget) init(ctx context.Context, scale int) error {
	path, err := pgbenchPath()
	if err != nil {
		return err
	}
	args := append([]string{"-i", "-q", "-s", strconv.Itoa(scale)}, p.args()...)
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// run is pgbench's simple-update workload (-N) with prepared statements, as
// pgx prepares bmdb's.
func (p pgbenchTarget) run(ctx context.Context, clients int, d time.Duration) (float64, error) {
	path, err := pgbenchPath()
	if err != nil {
		return 0, err
	}
	threads := min(clients, cpus())
	args := append([]string{"-N", "-M", "prepared", "-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(int(d.Seconds()))}, p.args()...)
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench -N -c %d: %v: %s", clients, err, strings.TrimSpace(string(out)))
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no tps: %s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
