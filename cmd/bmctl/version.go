package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// commit and buildTime are set at build time, like version:
// -ldflags "-X main.commit=... -X main.buildTime=...". Without them they
// come from the VCS stamp go build records.
var commit, buildTime string

func init() { commands = append(commands, newVersionCmd) }

// versionInfo is what `bmctl version` prints.
type versionInfo struct {
	Version        string `json:"version"`
	Commit         string `json:"commit"`
	BuildTime      string `json:"build_time"`
	GoVersion      string `json:"go_version"`
	SchemaVersion  uint   `json:"schema_version"`            // the BMDB schema this binary needs
	Database       string `json:"database,omitempty"`        // where it points, password masked
	DatabaseSchema *uint  `json:"database_schema,omitempty"` // that database's schema version
	DatabaseDirty  bool   `json:"database_dirty,omitempty"`
	DatabaseError  string `json:"database_error,omitempty"` // why it could not be read
}

func buildInfo() versionInfo {
	v := versionInfo{Version: version, Commit: commit, BuildTime: buildTime, GoVersion: runtime.Version(), SchemaVersion: bmdb.LatestVersion()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	vcs := map[string]string{}
	for _, s := range bi.Settings {
		vcs[s.Key] = s.Value
	}
	if v.Commit == "" && vcs["vcs.revision"] != "" {
		v.Commit = vcs["vcs.revision"]
		if vcs["vcs.modified"] == "true" {
			v.Commit += "-dirty"
		}
	}
	if v.BuildTime == "" {
		v.BuildTime = vcs["vcs.time"] // the commit's time: go build records no other
	}
	return v
}

func newVersionCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build time, Go version and the schema versions",
		Long: `Prints this binary's version, commit, build time and Go version, the BMDB schema
version it needs, and the schema version of the database it is pointed at
(--db, BMCTL_DATABASE_URL, the config file, or the embedded database when it
is running; it is never started for this). A database that cannot be read is
reported, not an error: the version always prints.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(output, "table", "json")
			if err != nil {
				return err
			}
			v := buildInfo()
			a.readDatabaseSchema(cmd.Context(), &v)
			if format == "json" {
				return writeJSON(a.Out, v)
			}
			fmt.Fprintf(a.Out, "version:         %s\ncommit:          %s\nbuilt:           %s\ngo:              %s\nschema needed:   %d\n",
				orDash(v.Version), orDash(v.Commit), orDash(v.BuildTime), v.GoVersion, v.SchemaVersion)
			switch {
			case v.DatabaseError != "":
				fmt.Fprintf(a.Out, "database schema: unknown: %s (%s)\n", v.DatabaseError, v.Database)
			case v.DatabaseSchema != nil:
				dirty := ""
				if v.DatabaseDirty {
					dirty = ", dirty"
				}
				fmt.Fprintf(a.Out, "database schema: %d%s (%s)\n", *v.DatabaseSchema, dirty, v.Database)
			default:
				fmt.Fprintln(a.Out, "database schema: - (no database configured, the embedded one is not running)")
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// readDatabaseSchema fills in the schema version of the configured
// database, or of the embedded one if it runs.
func (a *app) readDatabaseSchema(ctx context.Context, v *versionInfo) {
	url := a.dbURL
	if url == "" {
		c := embeddedCluster()
		if !c.Running() {
			return
		}
		url = c.URL(embeddedDB)
	}
	v.Database = setting{Value: url, secret: "url"}.masked()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := bmdb.Open(ctx, url)
	if err != nil {
		v.DatabaseError = oneLine(err.Error())
		return
	}
	defer conn.Close()
	st, err := conn.SchemaStatus(ctx)
	if err != nil {
		v.DatabaseError = oneLine(err.Error())
		return
	}
	v.DatabaseSchema, v.DatabaseDirty = &st.Version, st.Dirty
}
