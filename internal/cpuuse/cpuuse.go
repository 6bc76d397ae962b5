// Package cpuuse measures CPU time over a benchmark run: the whole machine's
// (this process, PostgreSQL and anything else on it, from /proc/stat) and
// this process's own. On a saturated machine throughput is cores ÷ CPU per
// operation, and CPU per operation says which side the time went to.
package cpuuse

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sample is the CPU time used up to a moment.
type Sample struct{ machine, self time.Duration }

// Now samples the CPU time used so far.
func Now() (Sample, error) {
	m, err := machineBusy()
	if err != nil {
		return Sample{}, err
	}
	return Sample{machine: m, self: selfCPU()}, nil
}

// Since is the CPU time used since s: by every processor, and by this process.
func (s Sample) Since() (machine, self time.Duration, err error) {
	n, err := Now()
	return n.machine - s.machine, n.self - s.self, err
}

// machineBusy is the time all processors spent neither idle nor waiting
// for I/O, from the first line of /proc/stat (in USER_HZ, 100 a second).
func machineBusy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("reading the machine's CPU time: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat starts with %q, not the cpu totals", line)
	}
	var busy int64
	for i, f := range fields[1:9] { // user nice system idle iowait irq softirq steal
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return time.Duration(busy) * time.Second / 100, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
