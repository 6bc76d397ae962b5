package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/ops"
)

// newRolesCmd is `bmctl db roles`: the group roles each component runs under.
func newRolesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "roles",
		Short: "Manage BMDB's group roles (bmctl_viewer, bmctl_operator, bmctl_shepherd, bmctl_endpoint)",
		Long: `BMDB defines one NOLOGIN group role per component, each with only what that
component needs (migration 0013, table bmdb_grants):
  bmctl_viewer    reads what the views read; holds a listener lease
  bmctl_operator  the viewer's reads plus the operator actions
  bmctl_shepherd  sessions, work, backoffs, the tags its loops write, history inserts
  bmctl_endpoint  heartbeats and hardware reports of machines whose agent key matches
No role may change or delete work history; only the schema owner prunes it.`,
	}
	asGroup(cmd)
	cmd.AddCommand(&cobra.Command{
		Use:   "apply",
		Short: "Create the group roles if missing and make their grants what this bmctl says (idempotent; run as the schema owner)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			conn, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := bmdb.ApplyRoles(ctx, conn.Pool); err != nil {
				return err
			}
			names := make([]string, len(bmdb.Roles))
			for i, r := range bmdb.Roles {
				names[i] = string(r)
			}
			fmt.Fprintf(a.Out, "roles applied: %s\n", strings.Join(names, ", "))
			missing, err := bmdb.UngrantedObjects(ctx, conn.Pool)
			if err != nil {
				return err
			}
			if len(missing) > 0 {
				return fmt.Errorf("no role may use %s: bmdb_grants has no row for it (a migration forgot one)", strings.Join(missing, ", "))
			}
			return nil
		},
	}, &cobra.Command{
		Use:     "grant <login> <role>",
		Short:   "Make a site's login role a member of a group role (viewer, operator, shepherd, endpoint)",
		Example: "  bmctl db roles grant shepherd1 shepherd\n  bmctl db roles grant alice operator",
		Args:    exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			role, err := bmdb.ParseRole(args[1])
			if err != nil {
				return usageError{err}
			}
			ctx := cmd.Context()
			conn, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := bmdb.GrantRole(ctx, conn.Pool, args[0], role); err != nil {
				return err
			}
			fmt.Fprintf(a.Out, "granted %s to %s\n", role, args[0])
			return nil
		},
	})
	return cmd
}

// newHistoryPruneCmd is `bmctl history prune`: the only way history shrinks.
func newHistoryPruneCmd(a *app) *cobra.Command {
	var before, as string
	cmd := &cobra.Command{
		Use:   "prune --before T",
		Short: "Delete work history older than T (schema owner only; the prune itself is recorded)",
		Long: `Deletes the work history recorded before --before and records the prune (when,
the cutoff, how many events, the database role and --as) in work_history_prunes.
History is append-only for every component role: only the schema owner can
prune it.`,
		Example: "  bmctl history prune --before 400d\n  bmctl history prune --before 2026-01-01",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if before == "" {
				return usageError{fmt.Errorf(`prune needs --before: a time ("2026-01-01") or an age ("400d")`)}
			}
			cut, err := parseSince(before, time.Now())
			if err != nil {
				return usageError{fmt.Errorf("--before: %w", err)}
			}
			if as == "" {
				as = ops.Actor()
			}
			ctx := cmd.Context()
			conn, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			n, err := bmdb.PruneHistory(ctx, conn.Pool, cut, as)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Out, "pruned %d events recorded before %s\n", n, cut.Local().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&before, "before", "", `delete events before this time ("2026-01-01", RFC 3339) or age ("400d", "9000h")`)
	cmd.Flags().StringVar(&as, "as", "", "who is pruning, recorded with the prune (default user@host)")
	return cmd
}
