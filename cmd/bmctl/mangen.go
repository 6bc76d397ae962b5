package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func init() { devSubcommands = append(devSubcommands, newDevManCmd) }

// newDevManCmd writes the man pages of the whole command tree, for the
// Debian package (make package): one page per command, from the same help
// text --help prints.
func newDevManCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "man DIR",
		Short: "Write a man page (section 1) for every command into DIR",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // no generation date: the same tree gives the same pages
			header := &doc.GenManHeader{Title: "BMCTL", Section: "1", Source: "bmctl " + version, Manual: "bmctl manual"}
			if err := doc.GenManTree(root, header, args[0]); err != nil {
				return fmt.Errorf("writing man pages: %w", err)
			}
			return nil
		},
	}
}
