package main

import (
	"strings"
	"testing"

	"github.com/bmctl/bmctl/pkg/fleet"
)

func TestStats(t *testing.T) {
	f, _ := seedViews(t)
	out := f.ok("stats")
	for _, want := range []string{"STATE", "new                 1", "agent_starting      1", "healthy             1",
		"heartbeat_stale     1", "backed_off          1", "total               5",
		"AgentStart  1     1", "sessions: 1 live, 0 expired", "oldest work: AgentStart on", "srv-starting (uploading agent)", "by shepherd-test@"} {
		if !strings.Contains(out, want) {
			t.Errorf("stats lacks %q:\n%s", want, out)
		}
	}
	var st struct {
		Machines int            `json:"machines"`
		ByState  map[string]int `json:"by_state"`
		Procs    []struct {
			Process  string `json:"process"`
			Work     int    `json:"work"`
			Backoffs int    `json:"backoffs"`
		} `json:"processes"`
		Sessions struct{ Live, Expired int } `json:"sessions"`
		Oldest   *struct {
			ProviderID string `json:"provider_id"`
			Process    string `json:"process"`
		} `json:"oldest_work"`
	}
	decodeJSON(t, f.ok("stats", "-o", "json"), &st)
	if st.Machines != 5 || len(st.ByState) != len(fleet.States) || st.ByState["backed_off"] != 1 || st.ByState["unprovided"] != 0 ||
		len(st.Procs) != 3 || st.Sessions.Live != 1 || st.Oldest == nil || st.Oldest.ProviderID != "srv-starting" {
		t.Errorf("stats json: %+v", st)
	}
}
