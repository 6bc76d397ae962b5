package agent

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/bmctl/bmctl/pkg/heartbeat"
)

// CollectHardware reads CPU, memory, disks and NICs from root's /proc and
// /sys. What it cannot read it leaves empty: a partial report beats none.
func CollectHardware(root string) heartbeat.HardwareReport {
	var r heartbeat.HardwareReport
	r.CPUModel, r.CPUCount = cpus(filepath.Join(root, "proc/cpuinfo"))
	r.MemoryBytes = memTotal(filepath.Join(root, "proc/meminfo"))
	r.Disks = disks(filepath.Join(root, "sys/block"))
	r.NICs = nics(filepath.Join(root, "sys/class/net"))
	return r
}

func cpus(path string) (model string, count int) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			count++
		case "model name", "Model": // x86; arm64 names the board as Model
			if model == "" {
				model = strings.TrimSpace(v)
			}
		}
	}
	return model, count
}

func memTotal(path string) uint64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// MemTotal:       24563892 kB
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseUint(fields[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// disks lists whole block devices backed by a device (a disk, NVMe
// namespace or virtual disk of a VM), leaving out loop, ram, zram,
// device-mapper and md devices, which have none and say nothing about the
// hardware.
func disks(dir string) []heartbeat.Disk {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := []heartbeat.Disk{}
	for _, e := range entries {
		name := e.Name()
		if !exists(filepath.Join(dir, name, "device")) || hasAnyPrefix(name, "sr", "fd") { // optical and floppy drives
			continue
		}
		sectors := readUint(filepath.Join(dir, name, "size"))
		if sectors == 0 {
			continue
		}
		out = append(out, heartbeat.Disk{
			Name:      name,
			SizeBytes: sectors * 512, // /sys counts 512-byte sectors whatever the device's block size
			Model:     readString(filepath.Join(dir, name, "device/model")),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// nics lists physical interfaces: those backed by a device, leaving out
// loopback, bridges, bonds, veth and other virtual ones.
func nics(dir string) []heartbeat.NIC {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := []heartbeat.NIC{}
	for _, e := range entries {
		name := e.Name()
		if !exists(filepath.Join(dir, name, "device")) {
			continue
		}
		mac := readString(filepath.Join(dir, name, "address"))
		if mac == "" || mac == "00:00:00:00:00:00" {
			continue
		}
		out = append(out, heartbeat.NIC{Name: name, MAC: mac})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func readString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readUint(path string) uint64 {
	n, _ := strconv.ParseUint(readString(path), 10, 64)
	return n
}
