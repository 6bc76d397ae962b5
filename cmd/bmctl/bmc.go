package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmcops"
	"github.com/bmctl/bmctl/pkg/ops"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

func init() { commands = append(commands, newBMCCmd) }

func newBMCCmd(a *app) *cobra.Command {
	cmd := asGroup(&cobra.Command{
		Use:   "bmc",
		Short: "Machines' BMCs (Redfish, IPMI) from an inventory: status and power overrides",
	})
	cmd.AddCommand(newBMCStatusCmd(a), newBMCPowerCmd(a))
	return cmd
}

// loadInventory opens the static inventory a bmc command reads.
func loadInventory(path string, a *app) (*shepherd.StaticProvider, error) {
	if path == "" {
		return nil, usageError{errors.New("give the inventory with --inventory FILE (env BMCTL_INVENTORY)")}
	}
	return shepherd.NewStaticProvider(path, a.logger())
}

func newBMCStatusCmd(a *app) *cobra.Command {
	var inventory, output string
	var all bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status [machine...]",
		Short: "Whether each machine's BMC answers, its power state and the resets it allows",
		Long: `Reads the BMC of each named machine (inventory ids), or of every machine of the
inventory with --all: whether it answers, the power state, the reset types it
allows, how long the read took, and what is wrong if anything. It only reads.
Exits 1 if any BMC did not answer.`,
		Example: "  bmctl bmc status --all --inventory /etc/bmctl/inventory.yaml\n  bmctl bmc status a01 a02 -o json",
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(output, "table", "json")
			if err != nil {
				return err
			}
			if all == (len(args) > 0) {
				return usageError{errors.New("name machines (inventory ids) or give --all, not both")}
			}
			p, err := loadInventory(inventory, a)
			if err != nil {
				return err
			}
			ids := args
			if all {
				ids = p.MachineIDs()
			}
			ctx := cmd.Context()
			list := bmcops.Status(ctx, p, ids, bmcops.StatusOptions{Timeout: timeout})
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = p.Close(cctx) // delete the sessions opened for the reads
			cancel()
			if format == "json" {
				err = writeJSONList(a.Out, list)
			} else {
				t := newTable("MACHINE", "TYPE", "BMC", "ANSWERS", "POWER", "RESETS", "LATENCY", "PROBLEM").flex("BMC", "RESETS", "PROBLEM")
				for _, s := range list {
					answers := "no"
					if s.Answers {
						answers = "yes"
					}
					latency := "-"
					if s.Latency > 0 {
						latency = s.Latency.Round(time.Millisecond).String()
					}
					t.add(s.Machine, orDash(s.Type), orDash(s.Address), answers, orDash(s.Power), orDash(strings.Join(s.Resets, ",")), latency, orDash(s.Problem))
				}
				err = a.printTable(t)
			}
			if err != nil {
				return err
			}
			silent := 0
			for _, s := range list {
				if !s.Answers {
					silent++
				}
			}
			if silent > 0 {
				return fmt.Errorf("%d of %d BMCs did not answer", silent, len(list))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&inventory, "inventory", "", "the inventory file (env BMCTL_INVENTORY)")
	f.BoolVar(&all, "all", false, "every machine of the inventory")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "bound on each BMC's read")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newBMCPowerCmd(a *app) *cobra.Command {
	var inventory, reason, as, output string
	var force bool
	cmd := &cobra.Command{
		Use:   "power on|off|cycle <machine>",
		Short: "Power a machine on, off, or through a verified cycle, through its BMC",
		Long: `An operator's override: powers the machine on (and waits for SSH), forces it off,
or hard-reboots it the way Recovery does (the best reset its BMC allows, then
Off or SSH gone, On, and SSH answering, each within the inventory's bounds).
The machine is named by UUID, unique UUID prefix or provider id, and must be
of the inventory given. It refuses while a shepherd works on the machine,
unless --force. The action, done or failed, is recorded in the machine's
history as a PowerAction event with the operator (--as, else user@host) and
--reason.`,
		Example: "  bmctl bmc power cycle a01 --reason 'kernel hung, console dead' --inventory inv.yaml",
		Args:    exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(output, "table", "json")
			if err != nil {
				return err
			}
			action := args[0]
			if action != "on" && action != "off" && action != "cycle" {
				return usageError{fmt.Errorf("power action %q: want on, off or cycle", action)}
			}
			if strings.TrimSpace(reason) == "" {
				return usageError{errors.New("give --reason: it goes in the machine's history with you as the operator")}
			}
			actor := as
			if actor == "" {
				actor = ops.Actor()
			}
			if err := ops.CheckActor(actor); err != nil {
				return usageError{err}
			}
			p, err := loadInventory(inventory, a)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			defer func() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				_ = p.Close(cctx)
				cancel()
			}()
			conn, id, err := a.connectMachine(ctx, a.connect, args[1])
			if err != nil {
				return err
			}
			defer conn.Close()
			report, err := bmcops.Power(ctx, conn.Pool, p, bmcops.PowerRequest{Machine: id, Action: action, Reason: reason, Actor: actor, Force: force})
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(a.Out, map[string]string{"machine": id.String(), "action": action, "report": report, "actor": actor})
			}
			fmt.Fprintf(a.Out, "machine %s: %s\n", id, report)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&inventory, "inventory", "", "the inventory file (env BMCTL_INVENTORY)")
	f.StringVar(&reason, "reason", "", "why (required; recorded in history)")
	f.StringVar(&as, "as", "", "the operator recorded in history (default user@host)")
	f.BoolVar(&force, "force", false, "act even while a shepherd works on the machine")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
