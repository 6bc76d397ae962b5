package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newDBCmd) }

func newDBCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "db",
		Short: "Manage the embedded local database used when none is configured",
	}
	asGroup(cmd)
	cmd.AddCommand(newRolesCmd(a))
	cmd.AddCommand(&cobra.Command{
		Use:   "start",
		Short: "Create (if needed), start and migrate the embedded database",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			saved := a.dbURL
			a.dbURL = ""
			defer func() { a.dbURL = saved }()
			url, err := a.databaseURL(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Out, "embedded database running in %s\nurl: %s\n", embeddedCluster().Dir, url)
			return nil
		},
	}, &cobra.Command{
		Use:   "stop",
		Short: "Stop the embedded database",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := embeddedCluster()
			if err := c.Stop(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(a.Out, "embedded database in %s stopped\n", c.Dir)
			return nil
		},
	}, &cobra.Command{
		Use:   "status",
		Short: "Say whether the embedded database is running and where it is",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := embeddedCluster()
			state := "not created"
			switch {
			case c.Running():
				state = "running"
			case c.Initialized():
				state = "stopped"
			}
			fmt.Fprintf(a.Out, "embedded database: %s\ndirectory: %s\nurl: %s\n", state, c.Dir, c.URL(embeddedDB))
			return nil
		},
	}, &cobra.Command{
		Use:   "url",
		Short: "Print the embedded database's connection URL (for --db or psql)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(a.Out, embeddedCluster().URL(embeddedDB))
			return nil
		},
	})
	return cmd
}
