package shepherd

import (
	"strings"
	"testing"
)

// FuzzParseInventory reads whatever an inventory file holds (people write
// it, tools generate it): never a panic, a refusal names the file on one
// line, and an accepted inventory has machines with unique, non-empty ids
// and addresses.
func FuzzParseInventory(f *testing.F) {
	for _, s := range []string{
		"name: lab\nreboot_command: \"ipmitool -H {{.BMC}} chassis power cycle\"\nmachines:\n  - id: m1\n    address: 10.0.0.1:22\n    location: fra1\n  - id: m2\n    address: 10.0.0.2:22\n",
		"machines:\n  - id: m1\n    address: 10.0.0.1:22\n    bmc:\n      address: https://10.0.1.1\n      username: root\n      password_env: BMC_PASSWORD\n",
		"machines:\n  - id: m1\n    address: a:22\n  - id: m1\n    address: b:22\n",
		"machines:\n  - id: m1\n    address: a:22\n    bmc:\n      password: secret\n",
		"reboot_command: \"{{.Nope\"\n",
		`{"machines":[{"id":"m1","address":"a:22"}]}`,
		"machines: [", "", "- a\n- b\n", "machines:\n  - {}\n", "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := parseInventory("fleet.yaml", data)
		if err != nil {
			if msg := err.Error(); !strings.Contains(msg, "fleet.yaml") || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("refusal %q: want one line naming the file", msg)
			}
			return
		}
		seen := map[string]bool{}
		for _, m := range inv.Machines {
			if m.ID == "" || m.Address == "" || seen[m.ID] {
				t.Fatalf("accepted machine %+v (ids so far %v)", m, seen)
			}
			seen[m.ID] = true
		}
	})
}
