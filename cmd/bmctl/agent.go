package main

import (
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/agent"
)

func init() { commands = append(commands, newAgentCmd) }

func newAgentCmd(a *app) *cobra.Command {
	var (
		dir        string
		detached   bool
		foreground bool
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the machine agent (the shepherd starts it over SSH)",
		Long: `Reads the shepherd's init message (JSON) on stdin, generates an ed25519 key and
answers with the init echoed and the public key on stdout. It then detaches:
a new process in its own session, with no terminal and its output in
<dir>/agent.log, heart-beats to the endpoint named in the init message,
verifying it with the init's CA and authenticating with the key. This process
exits once the detached agent runs, so the SSH session ends.

--foreground keeps the agent in this process instead (for debugging).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			opts := agent.Options{Logger: a.logger()}
			if detached {
				// The SSH session's end must not stop the agent.
				signal.Ignore(syscall.SIGHUP)
				return agent.RunDetached(ctx, opts)
			}
			if foreground {
				ag, err := agent.Takeover(ctx, a.In, a.Out, opts)
				if err != nil {
					return err
				}
				return ag.Run(ctx)
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			return agent.Detach(ctx, a.In, a.Out, agent.Spawn{
				Path:    exe,
				Args:    []string{"agent", "--detached", "--log-level", a.logLevel, "--log-format", a.logFormat},
				LogFile: filepath.Join(dir, "agent.log"),
				PIDFile: filepath.Join(dir, "agent.pid"),
			})
		},
	}
	cmd.Flags().StringVar(&dir, "dir", defaultAgentDir(), "directory of the agent's log and pid file (env BMCTL_AGENT_DIR)")
	setEnvVars(cmd.Flags(), "dir", "BMCTL_AGENT_DIR")
	cmd.Flags().BoolVar(&foreground, "foreground", false, "answer and keep running in this process instead of detaching")
	cmd.Flags().BoolVar(&detached, "detached", false, "internal: the detached agent, started by bmctl agent itself")
	_ = cmd.Flags().MarkHidden("detached")
	return cmd
}

func defaultAgentDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/bmctl-agent"
	}
	return filepath.Join(os.TempDir(), "bmctl-agent-"+strconv.Itoa(os.Geteuid()))
}
