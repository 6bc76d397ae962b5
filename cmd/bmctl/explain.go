package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

func init() { commands = append(commands, newExplainCmd) }

func newExplainCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "explain <machine>",
		Short: "Say, per process, whether a machine is a candidate now and why, condition by condition",
		Long: `Evaluates each process's candidate rule for one machine, with the numbers the
running shepherd recorded (thresholds, remediation budget, breakers): whether
the machine is a candidate now, every condition with its values, and when it
next becomes eligible where that is knowable. The conditions are the ones the
shepherd's claim queries use, evaluated by the same SQL.
The machine is a UUID, a unique UUID prefix or a provider id.`,
		Example:           "  bmctl explain 3f2a\n  bmctl explain srv-1234 -o json",
		Args:              exactArgs(1),
		ValidArgsFunction: a.completeMachines(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(output, "table", "json")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			conn, id, err := a.connectMachine(ctx, a.connect, args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			ex, err := bmdb.Explain(ctx, conn.Pool, id)
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(a.Out, ex)
			}
			return printExplanation(a.Out, ex)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// printExplanation writes an explanation for people: the policy it used,
// then per process the verdict and each condition.
func printExplanation(w io.Writer, ex bmdb.Explanation) error {
	var b strings.Builder
	fmt.Fprintf(&b, "machine %s, at %s\n", ex.Machine, ex.At.UTC().Format("2006-01-02 15:04:05 UTC"))
	fmt.Fprintf(&b, "policy: %s\n", policyLine(ex.Policy))
	for _, v := range ex.Processes {
		verdict := "not a candidate"
		if v.Candidate {
			verdict = "CANDIDATE"
		}
		fmt.Fprintf(&b, "\n%s: %s: %s\n", shortProcess(string(v.Process)), verdict, v.Reason)
		width := 0
		for _, c := range v.Conditions {
			width = max(width, len(c.Name))
		}
		for _, c := range v.Conditions {
			mark := "✓"
			if !c.Holds {
				mark = "✗"
			}
			fmt.Fprintf(&b, "  %s %-*s  %s\n", mark, width, c.Name, c.Detail)
		}
		switch {
		case v.Candidate:
		case v.NextEligible != nil:
			fmt.Fprintf(&b, "  next eligible: %s, if nothing else changes\n", timeAndAge(*v.NextEligible, ex.At))
		default:
			fmt.Fprintln(&b, "  next eligible: not knowable (waits for an operator, a process or the machine)")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// policyLine is a recorded policy in one line, with where it came from.
func policyLine(rp bmdb.RecordedPolicy) string {
	p := rp.Policy
	br := p.Breaker
	s := fmt.Sprintf("stale after %s, no heartbeat %s after start, budget %d Recovery attempts per %s, breaker max(%d, %g%%) silent (location max(%d, %g%%)) after %s",
		span(p.Thresholds.StaleHeartbeat), span(p.Thresholds.NoHeartbeatAfterStart), p.Budget.Attempts, span(p.Budget.Window),
		br.MaxSilent, br.MaxSilentFraction*100, br.LocationMaxSilent, br.LocationMaxSilentFraction*100, span(br.Silence))
	switch {
	case rp.Session == nil:
		return s + " (defaults: no shepherd has recorded its policy)"
	case rp.Live:
		return s + fmt.Sprintf(" (recorded by live shepherd session %s)", fleet.ShortID(*rp.Session))
	default:
		return s + fmt.Sprintf(" (recorded %s by a shepherd no longer running)", timeAndAge(*rp.RecordedAt, time.Now()))
	}
}
