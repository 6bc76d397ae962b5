package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// servePower starts the simulated power controller: POST
// /power-cycle/<provider id> power-cycles one machine, and fails like a BMC
// that does not answer at the configured rate. It returns its base URL.
func (f *fleet) servePower(ctx context.Context) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /power-cycle/{id}", func(w http.ResponseWriter, r *http.Request) {
		m, ok := f.machines[r.PathValue("id")]
		if !ok {
			http.Error(w, errNoMachine.Error(), http.StatusNotFound)
			return
		}
		if f.chance() {
			f.log.Info("fault: power cycle fails", "machine", m.id)
			http.Error(w, "BMC did not acknowledge chassis power cycle (timeout after 5s)", http.StatusGatewayTimeout)
			return
		}
		if err := f.powerCycle(ctx, m); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "Chassis Power Control: Cycle (%s)\n", m.id)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return "http://" + ln.Addr().String(), nil
}

// PowerCycle asks the demo's power controller at base to power-cycle one
// machine: what the inventory's reboot command runs (`bmctl demo
// power-cycle`). The controller's answer is written to out.
func PowerCycle(ctx context.Context, base, id string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/power-cycle/"+id, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("power controller unreachable: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("power controller: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	_, err = out.Write(body)
	return err
}

// writeInventory writes the static provider's inventory of the fleet: the
// machines' current addresses, and a reboot command that runs bmctl itself to
// reach the power controller.
func (f *fleet) writeInventory(path, self, power string) error {
	type machine struct {
		ID       string `yaml:"id"`
		Address  string `yaml:"address"`
		Location string `yaml:"location"`
	}
	inv := struct {
		Name          string    `yaml:"name"`
		RebootCommand string    `yaml:"reboot_command"`
		RebootTimeout string    `yaml:"reboot_timeout"`
		Machines      []machine `yaml:"machines"`
	}{
		Name:          ProviderName,
		RebootCommand: strconv.Quote(self) + " demo power-cycle --controller " + power + " {{.ID}}",
		RebootTimeout: "15s",
	}
	for i, id := range f.ids {
		inv.Machines = append(inv.Machines, machine{ID: id, Address: f.machines[id].sim.Addr(), Location: fmt.Sprintf("demo-rack-%d", i/10+1)})
	}
	data, err := yaml.Marshal(inv)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
