package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
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

// machineCompletions lists "id\tprovider provider-id" for ids starting with
// prefix, then provider ids starting with it; both read an index range.
func machineCompletions(ctx context.Context, conn *bmdb.Conn, prefix string, withHistory bool) ([]cobra.Completion, error) {
	hex := strings.ToLower(prefix)
	lo, hi := hex, hex+"\uffff"
	rows, err := conn.Pool.Query(ctx, `
		(SELECT m.machine_id::text, coalesce(p.provider || ' ' || p.provider_id, '')
		 FROM machines m LEFT JOIN machine_provided p ON p.machine_id = m.machine_id
		 WHERE m.machine_id::text >= $1 AND m.machine_id::text < $2
		 ORDER BY 1 LIMIT $3)
		UNION ALL
		(SELECT p.provider_id, p.provider || ' ' || m.machine_id::text
		 FROM machine_provided p JOIN machines m ON m.machine_id = p.machine_id
		 WHERE p.provider_id >= $4 AND p.provider_id < $5 AND $4 <> ''
		 ORDER BY 1 LIMIT $3)`, lo, hi, maxCompletions, prefix, prefix+"\uffff")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []cobra.Completion
	for rows.Next() {
		var name, desc string
		if err := rows.Scan(&name, &desc); err != nil {
			return nil, err
		}
		out = append(out, cobra.CompletionWithDesc(name, desc))
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if withHistory && len(out) == 0 && prefix != "" {
		// A machine that is gone but has history.
		rows, err := conn.Pool.Query(ctx, `
			SELECT DISTINCT machine_id::text FROM work_history
			WHERE machine_id::text >= $1 AND machine_id::text < $2 LIMIT $3`, lo, hi, maxCompletions)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				return nil, err
			}
			out = append(out, cobra.CompletionWithDesc(name, "deleted machine"))
		}
		return out, rows.Err()
	}
	return out, nil
}

// completeProcesses completes --process.
func completeProcesses(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return []cobra.Completion{"AgentStart", "Recovery", "Access"}, cobra.ShellCompDirectiveNoFileComp
}
