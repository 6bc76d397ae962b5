package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/x/term"
	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
	"github.com/bmctl/bmctl/pkg/ops"
)

// Operator actions share one way to select machines, preview, confirm,
// record the actor and print (pkg/ops does the work).

// opsFlags are the flags every operator action takes.
type opsFlags struct {
	states     []string
	location   string
	provider   string
	all        bool
	dryRun     bool
	yes        bool
	as         string
	output     string
	thresholds thresholdFlags
	noMachines bool // the action is fleet-wide (breaker override): no selector
}

const opsHelp = `
Machines are named by UUID, unique UUID prefix or provider id, or selected with
--state, --location and --provider (all must match) or --all. --dry-run prints
exactly what would change and changes nothing. On a terminal the changes are
shown and must be confirmed with y (--yes skips the question); off a terminal
they are made at once. Every change is recorded in the machines' history with
the operator: --as, else user@host.`

func (o *opsFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	if !o.noMachines {
		f.StringSliceVar(&o.states, "state", nil, "select machines in these states (see 'machines list --help')")
		f.StringVar(&o.location, "location", "", "select the machines at this location")
		f.StringVar(&o.provider, "provider", "", "select the machines of this provider")
		f.BoolVar(&o.all, "all", false, "select every machine")
		o.thresholds.register(cmd)
		_ = cmd.RegisterFlagCompletionFunc("state", completeStates)
	}
	f.BoolVar(&o.dryRun, "dry-run", false, "print what would change and change nothing")
	f.BoolVarP(&o.yes, "yes", "y", false, "do not ask for confirmation")
	f.StringVar(&o.as, "as", "", "the operator recorded in history (default user@host)")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
}

// selector parses the selection flags and the machine arguments.
func (o *opsFlags) selector(refs []string) (ops.Selector, error) {
	s := ops.Selector{Refs: refs, Location: o.location, Provider: o.provider, All: o.all}
	for _, v := range o.states {
		st, err := fleet.ParseState(v)
		if err != nil {
			return s, usageError{err}
		}
		s.States = append(s.States, st)
	}
	if err := s.Check(); err != nil {
		return s, usageError{err}
	}
	return s, nil
}

func (o *opsFlags) actor() string {
	if o.as != "" {
		return o.as
	}
	return ops.Actor()
}

// parseProcess reads an optional --process.
func parseProcess(v string) (bmdb.Process, error) {
	if v == "" {
		return "", nil
	}
	p, err := bmdb.ParseProcess(v)
	if err != nil {
		return "", usageError{err}
	}
	return p, nil
}

// machineAction is an operator action on selected machines that may be
// narrowed to one process and may take a reason.
type machineAction struct {
	processHelp string // --process's help
	reasonHelp  string // --reason's help; "" for no --reason
	// check validates the flags before anything runs (optional).
	check func(reason string) error
	build func(machines []uuid.UUID, p bmdb.Process, reason string) ops.Action
	// after runs once the changes are made (optional; not on a dry run).
	after func(ctx context.Context, db bmdb.DBTX, res ops.Result) error
}

// wire gives cmd the action's flags and its run.
func (a *app) wire(cmd *cobra.Command, m machineAction) *cobra.Command {
	var (
		process, reason string
		o               opsFlags
	)
	cmd.ValidArgsFunction = a.completeMachines(false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		p, err := parseProcess(process)
		if err != nil {
			return err
		}
		if m.check != nil {
			if err := m.check(reason); err != nil {
				return err
			}
		}
		return a.runOps(cmd.Context(), &o, args, func(ms []uuid.UUID) ops.Action { return m.build(ms, p, reason) }, m.after)
	}
	cmd.Flags().StringVar(&process, "process", "", m.processHelp)
	if m.reasonHelp != "" {
		cmd.Flags().StringVar(&reason, "reason", "", m.reasonHelp)
	}
	o.register(cmd)
	_ = cmd.RegisterFlagCompletionFunc("process", completeProcesses)
	return cmd
}

// runOps selects the machines (unless the action is fleet-wide), builds the
// action for them and runs it: previewed, confirmed and printed.
func (a *app) runOps(ctx context.Context, o *opsFlags, refs []string, build func([]uuid.UUID) ops.Action,
	after func(context.Context, bmdb.DBTX, ops.Result) error) (err error) {
	format, err := outputFormat(o.output, "table", "json")
	if err != nil {
		return err
	}
	if err := ops.CheckActor(o.actor()); err != nil {
		return usageError{err}
	}
	var sel ops.Selector
	if !o.noMachines {
		if sel, err = o.selector(refs); err != nil {
			return err
		}
	}
	conn, err := a.connectAs(ctx, bmdb.RoleOperator)
	if err != nil {
		return err
	}
	defer conn.Close()
	var machines []uuid.UUID
	if !o.noMachines {
		machines, err = ops.Select(ctx, conn.Pool, sel, o.thresholds.th)
		if errors.Is(err, fleet.ErrInvalidMachineRef) {
			return usageError{err}
		}
		if err != nil {
			return err
		}
	}
	action := build(machines)
	opt := ops.Options{Actor: o.actor(), DryRun: o.dryRun}
	if !o.yes && !o.dryRun && a.interactive() {
		opt.Confirm = func(p ops.Plan) (bool, error) {
			if err := a.printPlan(p, false); err != nil {
				return false, err
			}
			return a.confirm(fmt.Sprintf("%s: make these %d change(s) as %s? [y/N] ", action.Name(), len(p.Changes), opt.Actor))
		}
	}
	res, err := ops.Run(ctx, conn.Pool, action, opt)
	if err != nil {
		return err
	}
	if after != nil && !res.DryRun {
		defer func() {
			if err == nil {
				err = after(ctx, conn.Pool, res)
			}
		}()
	}
	if format == "json" {
		if res.Changes == nil {
			res.Changes = []ops.Change{}
		}
		if res.Skipped == nil {
			res.Skipped = []ops.Skip{}
		}
		return writeJSON(a.Out, res)
	}
	if res.DryRun {
		fmt.Fprintf(a.Out, "dry run: %s would make %d change(s); nothing was changed\n", action.Name(), len(res.Changes))
	}
	if err := a.printPlan(res.Plan, !res.DryRun); err != nil {
		return err
	}
	if res.Gone > 0 {
		fmt.Fprintf(a.Out, "%d confirmed change(s) no longer applied (changed meanwhile)\n", res.Gone)
	}
	return nil
}

// printPlan prints changes and skipped machines, one row each.
func (a *app) printPlan(p ops.Plan, done bool) error {
	t := newTable("MACHINE", "PROVIDER ID", "PROCESS", "EVENT", "CHANGE").flex("PROVIDER ID", "CHANGE")
	for _, c := range p.Changes {
		what := c.What
		if done {
			what = "done: " + what
		}
		t.add(machineName(c.MachineID), orDash(c.ProviderID), orDash(shortProcess(string(c.Process))), string(c.Event), what)
	}
	for _, s := range p.Skipped {
		t.add(machineName(s.MachineID), orDash(s.ProviderID), "-", "-", "unchanged: "+s.Why)
	}
	return a.printTable(t)
}

func machineName(id uuid.UUID) string {
	if id == ops.FleetMachine {
		return "(fleet)"
	}
	return fleet.ShortID(id)
}

// interactive says whether a person can answer a question: stdin is a
// terminal.
func (a *app) interactive() bool {
	f, ok := a.In.(*os.File)
	return ok && term.IsTerminal(f.Fd())
}

// confirm asks a yes/no question on stderr; only y or yes is yes, and no
// answer at all (an empty line, end of input) is no.
func (a *app) confirm(question string) (bool, error) {
	fmt.Fprint(a.Err, question)
	line, err := bufio.NewReader(a.In).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	answer := strings.ToLower(strings.TrimSpace(line))
	if errors.Is(err, io.EOF) {
		fmt.Fprintln(a.Err)
	}
	return answer == "y" || answer == "yes", nil
}

// parseFor reads a hold's or override's duration: Go durations ("90m",
// "4h30m") or days ("2d"), positive.
func parseFor(flag, v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err == nil && fmt.Sprint(days) == n && days > 0 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, usageError{fmt.Errorf(`--%s %q is not a positive duration ("30m", "4h", "2d")`, flag, v)}
	}
	return d, nil
}
