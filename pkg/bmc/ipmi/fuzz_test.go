package ipmi

import (
	"strings"
	"testing"

	"github.com/bmctl/bmctl/pkg/bmc"
)

// FuzzParsePowerStatus reads whatever ipmitool prints for a BMC: never a
// panic, and a power state only from the one line ipmitool prints.
func FuzzParsePowerStatus(f *testing.F) {
	for _, s := range []string{"Chassis Power is on\n", "Chassis Power is off\n", "Chassis Power is unknown\n",
		"Error: Unable to establish IPMI v2 / RMCP+ session\nChassis Power is off\n", "", " is on", "\x00 is off\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		p, ok := parsePowerStatus(out)
		if !ok {
			return
		}
		line := strings.ToLower(strings.TrimSpace(out))
		if strings.ContainsAny(line, "\r\n") {
			t.Fatalf("power %q read from several lines %q", p, out)
		}
		if (p == bmc.PowerOn) != strings.HasSuffix(line, " is on") || (p == bmc.PowerOff) != strings.HasSuffix(line, " is off") {
			t.Fatalf("power %q from %q", p, out)
		}
	})
}
