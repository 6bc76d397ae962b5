package heartbeat

import (
	"slices"
	"strings"
)

// storable is the report with every NUL replaced by U+FFFD: PostgreSQL's
// jsonb cannot hold \u0000, so a disk model with one (found by
// FuzzHeartbeatBody) failed the heartbeat as a database error, every minute,
// until Recovery rebooted a healthy machine.
func (hw HardwareReport) storable() HardwareReport {
	clean := func(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }
	hw.CPUModel = clean(hw.CPUModel)
	hw.Disks = slices.Clone(hw.Disks)
	for i := range hw.Disks {
		hw.Disks[i].Name, hw.Disks[i].Model = clean(hw.Disks[i].Name), clean(hw.Disks[i].Model)
	}
	hw.NICs = slices.Clone(hw.NICs)
	for i := range hw.NICs {
		hw.NICs[i].Name, hw.NICs[i].MAC = clean(hw.NICs[i].Name), clean(hw.NICs[i].MAC)
	}
	return hw
}
