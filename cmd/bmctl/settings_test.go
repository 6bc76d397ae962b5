package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// isolateSettings points the config search at an empty directory and clears
// the variables these tests set, so neither the machine's files nor the
// caller's environment leak in.
func isolateSettings(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	for _, k := range []string{"BMCTL_CONFIG", "BMCTL_LOOPS", "BMCTL_DATABASE_URL", "BMCTL_LOG_LEVEL", "BMCTL_LOG_FORMAT", "BMCTL_AGENT_ENDPOINT"} {
		t.Setenv(k, "")
	}
	return dir
}

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSettingsPrecedence: the command line beats the environment, which beats
// the config file, which beats the default; in the file the most specific
// key wins. What the shepherd then runs with shows in its error, so the test
// sees the value the command really got.
func TestSettingsPrecedence(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "agent")
	writeFile(t, bin, "agent")
	run := []string{"shepherd", "run", "--db", "postgres://unused/", "--agent-binary", bin, "--ssh-key", filepath.Join(t.TempDir(), "k")}
	for _, tc := range []struct {
		name, file, env string
		flag            []string
		want            string
	}{
		{name: "default", want: "agentstart needs --agent-endpoint"},
		{name: "top-level key", file: "loops: top\n", want: `unknown loop "top"`},
		{name: "group key over top-level", file: "loops: top\nshepherd:\n  loops: group\n", want: `unknown loop "group"`},
		{name: "command key over group", file: "loops: top\nshepherd:\n  loops: group\n  run:\n    loops: cmd\n", want: `unknown loop "cmd"`},
		{name: "env over file", file: "shepherd:\n  loops: file\n", env: "env", want: `unknown loop "env"`},
		{name: "flag over env", file: "shepherd:\n  loops: file\n", env: "env", flag: []string{"--loops", "flag"}, want: `unknown loop "flag"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := isolateSettings(t)
			if tc.file != "" {
				writeFile(t, filepath.Join(dir, "bmctl", "config.yaml"), tc.file)
			}
			t.Setenv("BMCTL_LOOPS", tc.env)
			r := bmctl(t, "", append(append([]string{}, run...), tc.flag...)...)
			if r.code != 2 || !strings.Contains(r.err, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", r.code, r.err, tc.want)
			}
		})
	}
}

// TestConfigViewSourcesAndMasking: config view says where each setting
// comes from and never prints a password.
func TestConfigViewSourcesAndMasking(t *testing.T) {
	dir := isolateSettings(t)
	path := writeFile(t, filepath.Join(dir, "bmctl", "config.yaml"), "# the fleet's shepherd\nlog-level: debug\nlog-format: text\nshepherd:\n  agentstart-parallelism: 16\nserver:\n  max-body: 2048\n")
	t.Setenv("BMCTL_DATABASE_URL", "postgres://bmctl:hunter2@bmdb.example:5432/bmdb")
	t.Setenv("BMCTL_MAX_BODY", "4096")
	r := bmctl(t, "", "config", "view", "-o", "json", "--log-format", "json")
	if r.code != 0 {
		t.Fatalf("config view: %+v", r)
	}
	if strings.Contains(r.out, "hunter2") {
		t.Errorf("config view printed the password:\n%s", r.out)
	}
	var got struct {
		ConfigFile string    `json:"config_file"`
		Settings   []setting `json:"settings"`
	}
	if err := json.Unmarshal([]byte(r.out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.out)
	}
	if got.ConfigFile != path {
		t.Errorf("config file %q, want %q", got.ConfigFile, path)
	}
	byKey := map[string]setting{}
	for _, s := range got.Settings {
		byKey[s.Command+" --"+s.Flag] = s
	}
	for key, want := range map[string]setting{
		"bmctl --db":         {Value: "postgres://bmctl:xxxxx@bmdb.example:5432/bmdb", Source: "env", From: "BMCTL_DATABASE_URL"},
		"bmctl --log-level":  {Value: "debug", Source: "file", From: path + ":2 log-level"},
		"bmctl --log-format": {Value: "json", Source: "flag", From: "--log-format"},
		"bmctl shepherd run --agentstart-parallelism": {Value: "16", Source: "file", From: path + ":5 shepherd.agentstart-parallelism"},
		"bmctl server --max-body":                     {Value: "4096", Source: "env", From: "BMCTL_MAX_BODY"},
	} {
		s := byKey[key]
		if s.Value != want.Value || s.Source != want.Source || s.From != want.From {
			t.Errorf("%s: %+v, want %+v", key, s, want)
		}
	}
	if _, ok := byKey["bmctl shepherd run --recovery-parallelism"]; ok {
		t.Errorf("config view without --all lists a setting at its default")
	}

	r = bmctl(t, "", "config", "view", "--all")
	if r.code != 0 || !strings.Contains(r.out, "config file: "+path) || !regexp.MustCompile(`--recovery-parallelism\s+2\s+default`).MatchString(r.out) || strings.Contains(r.out, "hunter2") {
		t.Errorf("config view --all: %+v", r)
	}
}

// TestConfigFileErrorsNameFileLineAndKey: an unknown key or a value its flag
// rejects stops every command with one line naming the file, line and key,
// whichever command the key belongs to.
func TestConfigFileErrorsNameFileLineAndKey(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"unknown flag", "log-level: warn\nshepherd:\n  agentstart-paralelism: 4\n", `:3: shepherd.agentstart-paralelism: unknown key`},
		{"unknown command", "log-level: warn\nshepard:\n  loops: recovery\n", `:2: shepard: unknown key: bmctl has no subcommand "shepard"`},
		{"unknown top-level key", "verbose: true\n", `:1: verbose: unknown key`},
		{"bad number", "shepherd:\n  run:\n    agentstart-parallelism: many\n", `:3: shepherd.run.agentstart-parallelism: bad value for --agentstart-parallelism`},
		{"bad duration of another command", "server:\n  heartbeat-interval: often\n", `:2: server.heartbeat-interval: bad value for --heartbeat-interval`},
		{"bad choice", "log-format: yaml\n", `:1: log-format: bad value for --log-format: "yaml": want text, json`},
		{"a list for a single value", "shepherd:\n  ssh-user: [root, admin]\n", `:2: shepherd.ssh-user: bad value for --ssh-user: want one value, not a list`},
		{"not YAML", "log-level: info\nshepherd:\n\tloops: x\n", `: line 3: found character that cannot start any token`},
		{"a key twice", "log-level: info\nshepherd:\n  loops: x\nlog-level: debug\n", `:4: log-level: set twice, first at line 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolateSettings(t)
			path := writeFile(t, filepath.Join(t.TempDir(), "bmctl.yaml"), tc.file)
			r := bmctl(t, "", "--config", path, "sessions")
			if r.code != 2 || !strings.Contains(r.err, path) || !strings.Contains(r.err, tc.want) || strings.Count(strings.TrimSpace(r.err), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line with %s and %q", r.code, r.err, path, tc.want)
			}
		})
	}
	t.Run("env", func(t *testing.T) {
		isolateSettings(t)
		t.Setenv("BMCTL_LOG_LEVEL", "loud")
		r := bmctl(t, "", "config", "view")
		if r.code != 2 || !strings.Contains(r.err, `BMCTL_LOG_LEVEL="loud"`) {
			t.Errorf("exit %d, stderr %q; want exit 2 naming BMCTL_LOG_LEVEL", r.code, r.err)
		}
	})
}

// TestConfigFileSearch: --config, then $BMCTL_CONFIG, then
// $XDG_CONFIG_HOME/bmctl/config.yaml; a named file must exist.
func TestConfigFileSearch(t *testing.T) {
	dir := isolateSettings(t)
	xdg := writeFile(t, filepath.Join(dir, "bmctl", "config.yaml"), "log-level: warn\n")
	env := writeFile(t, filepath.Join(t.TempDir(), "env.yaml"), "log-level: error\n")
	flag := writeFile(t, filepath.Join(t.TempDir(), "flag.yaml"), "log-level: debug\n")
	level := func(args ...string) string {
		r := bmctl(t, "", append(args, "config", "view")...)
		if r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
		m := regexp.MustCompile(`--log-level\s+(\S+)\s+file (\S+):`).FindStringSubmatch(r.out)
		if m == nil {
			t.Fatalf("no log-level from a file:\n%s", r.out)
		}
		return m[1] + " " + m[2]
	}
	if got := level(); got != "warn "+xdg {
		t.Errorf("XDG: %s", got)
	}
	t.Setenv("BMCTL_CONFIG", env)
	if got := level(); got != "error "+env {
		t.Errorf("BMCTL_CONFIG: %s", got)
	}
	if got := level("--config", flag); got != "debug "+flag {
		t.Errorf("--config: %s", got)
	}
	r := bmctl(t, "", "--config", filepath.Join(dir, "missing.yaml"), "config", "view")
	if r.code != 2 || !strings.Contains(r.err, "missing.yaml") {
		t.Errorf("missing --config file: %+v", r)
	}
}

// TestConfigDefaultIsAValidConfig: config default documents every setting
// of every command, and uncommented it is a config file bmctl accepts, each
// key taken from the file.
func TestConfigDefaultIsAValidConfig(t *testing.T) {
	isolateSettings(t)
	r := bmctl(t, "", "config", "default")
	if r.code != 0 {
		t.Fatalf("config default: %+v", r)
	}
	_, body, _ := strings.Cut(r.out, "\n\n") // the header is prose
	key := regexp.MustCompile(`^# (\s*[a-z0-9-]+:.*)$`)
	var b strings.Builder
	settings := 0 // keys with a value, not command groups
	for _, l := range strings.Split(body, "\n") {
		if m := key.FindStringSubmatch(l); m != nil {
			b.WriteString(m[1] + "\n")
			if !strings.HasSuffix(m[1], ":") {
				settings++
			}
		}
	}
	for _, want := range []string{"\n#     agentstart-parallelism: 8\n", "\n# db: \"\"\n", "\n#   listen: :8443\n"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("config default lacks %q", want)
		}
	}
	path := writeFile(t, filepath.Join(t.TempDir(), "all.yaml"), b.String())
	r = bmctl(t, "", "--config", path, "config", "view", "-o", "json")
	if r.code != 0 {
		t.Fatalf("the uncommented default config is refused: %+v\n%s", r, b.String())
	}
	if n := strings.Count(r.out, `"source": "file"`); n != settings || settings < 50 {
		t.Errorf("%d settings from the file, want %d (one per key)", n, settings)
	}
}
