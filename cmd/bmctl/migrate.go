package main

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

func init() { commands = append(commands, newMigrateCmd) }

func newMigrateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, revert and inspect BMDB schema migrations",
	}
	asGroup(cmd)
	withMigrator := func(fn func(m *bmdb.Migrator, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			url := a.dbURL
			if url == "" {
				var err error
				if url, err = a.embedded(cmd.Context(), embeddedDB); err != nil {
					return err
				}
			}
			m, err := bmdb.NewMigrator(url)
			if err != nil {
				return err
			}
			defer m.Close()
			return fn(m, args)
		}
	}
	var output string
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the schema version, dirty flag and pending migrations",
		Args:  noArgs,
		RunE: withMigrator(func(m *bmdb.Migrator, _ []string) error {
			st, err := m.Status()
			if err != nil {
				return err
			}
			if output == "json" {
				if st.Pending == nil {
					st.Pending = []uint{}
				}
				return json.NewEncoder(a.Out).Encode(st)
			}
			fmt.Fprintf(a.Out, "version: %d\ndirty:   %v\nlatest:  %d\npending: %v\n", st.Version, st.Dirty, st.Latest, st.Pending)
			switch {
			case st.Dirty:
				fmt.Fprintf(a.Out, "the schema is dirty: repair it by hand, then run 'bmctl migrate force N' with the version it is at\n")
			case st.Version > st.Latest:
				fmt.Fprintf(a.Out, "the schema is newer than this bmctl: upgrade bmctl\n")
			}
			return nil
		}),
	}
	status.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	up := &cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Args:  noArgs,
		RunE: withMigrator(func(m *bmdb.Migrator, _ []string) error {
			if err := m.Up(); err != nil {
				return err
			}
			st, err := m.Status()
			if err == nil {
				fmt.Fprintf(a.Out, "schema at version %d\n", st.Version)
			}
			return err
		}),
	}
	down := &cobra.Command{
		Use:   "down [N]",
		Short: "Revert the last N migrations (all of them without N)",
		Args:  cobra.MaximumNArgs(1),
		RunE: withMigrator(func(m *bmdb.Migrator, args []string) error {
			n := 0
			if len(args) == 1 {
				var err error
				if n, err = strconv.Atoi(args[0]); err != nil || n < 1 {
					return usageError{fmt.Errorf("N must be a positive number of migrations, got %q", args[0])}
				}
			}
			if err := m.Down(n); err != nil {
				return err
			}
			st, err := m.Status()
			if err == nil {
				fmt.Fprintf(a.Out, "schema at version %d\n", st.Version)
			}
			return err
		}),
	}
	force := &cobra.Command{
		Use:   "force V",
		Short: "Record version V as applied and clean, after repairing a dirty schema by hand",
		Args:  exactArgs(1),
		RunE: withMigrator(func(m *bmdb.Migrator, args []string) error {
			v, err := strconv.Atoi(args[0])
			if err != nil || v < -1 {
				return usageError{fmt.Errorf("V must be a schema version, got %q", args[0])}
			}
			if err := m.Force(v); err != nil {
				return err
			}
			fmt.Fprintf(a.Out, "schema recorded at version %d (clean)\n", v)
			return nil
		}),
	}
	cmd.AddCommand(status, up, down, force)
	return cmd
}
