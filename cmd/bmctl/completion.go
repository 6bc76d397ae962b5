package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

// Shell completion: cobra's own `bmctl completion bash|zsh|fish|powershell`
// scripts call back into `bmctl __complete`, which lands here for machine
// arguments and lists machine ids (and provider ids) from the database.

// maxCompletions caps what one completion request lists: a shell shows no
// more usefully, and a fleet can hold a hundred thousand machines.
const maxCompletions = 200

// completeMachines completes a machine argument with the UUIDs and provider
// ids that start with what was typed. It never starts the embedded database
// and stays silent on any error: completion must not print into a prompt.
func (a *app) completeMachines(withHistory bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		// Completion runs no hooks: take --db from the environment or the
		// config file here.
		if a.applySettings(cmd) != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		url := a.dbURL
		if url == "" {
			c := embeddedCluster()
			if !c.Running() {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			url = c.URL(embeddedDB)
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
		defer cancel()
		conn, err := bmdb.Open(ctx, url)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer conn.Close()
		names, err := machineCompletions(ctx, conn, toComplete, withHistory)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// machineCompletions lists "uuid<TAB>provider provider-id" for UUIDs that
// start with prefix, then "provider-id<TAB>provider uuid" for provider ids.
func machineCompletions(ctx context.Context, conn *bmdb.Conn, prefix string, withHistory bool) ([]cobra.Completion, error) {
	byID, byProviderID, err := fleet.Complete(ctx, conn.Pool, prefix, maxCompletions, fleet.ResolveOptions{WithHistory: withHistory})
	if err != nil {
		return nil, err
	}
	var out []cobra.Completion
	for _, c := range byID {
		desc := "deleted machine"
		if c.Provider != "" {
			desc = c.Provider + " " + c.ProviderID
		}
		out = append(out, cobra.CompletionWithDesc(c.ID.String(), desc))
	}
	for _, c := range byProviderID {
		out = append(out, cobra.CompletionWithDesc(c.ProviderID, c.Provider+" "+c.ID.String()))
	}
	return out, nil
}

// completeProcesses completes --process.
func completeProcesses(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return []cobra.Completion{"AgentStart", "Recovery", "Access"}, cobra.ShellCompDirectiveNoFileComp
}
