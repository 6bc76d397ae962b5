package equinix_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/bmctl/bmctl/internal/metalemu"
	"github.com/bmctl/bmctl/pkg/shepherd/equinix"
)

// BenchmarkListMachines lists a project of 1000 devices (10 pages of 100)
// through packngo, the transport and the emulator, as the provisioning loop
// does on every reconciliation. No validator: it would dominate.
func BenchmarkListMachines(b *testing.B) {
	emu := metalemu.New(token)
	project := emu.AddProject("fleet")
	for i := range 1000 {
		emu.AddDevice(project, fmt.Sprintf("bmctl-%04d", i), metalemu.Network{PublicIPv4: "192.0.2.1"})
	}
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()
	c := equinix.DefaultConfig()
	c.Token, c.ProjectID, c.APIURL = token, project, srv.URL+metalemu.BasePath
	c.RequestsPerSecond, c.Burst = 1e6, 1000 // measure the client, not its limit
	p, err := equinix.New(c)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		ms, err := p.ListMachines(context.Background())
		if err != nil || len(ms) != 1000 {
			b.Fatalf("%d machines, %v", len(ms), err)
		}
	}
}
