package tui

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"
	"github.com/google/uuid"

	"github.com/bmctl/bmctl/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// screen runs the real model in a real tea.Program, fed keystrokes through a
// pipe as a terminal would send them, and records every frame the model
// renders, so tests wait for what an operator would see.
type screen struct {
	t       *testing.T
	program *tea.Program
	keys    *io.PipeWriter
	done    chan struct{}

	mu     sync.Mutex
	cond   *sync.Cond
	frame  string // the latest frame, without colour
	model  Model
	frames int
	shown  []string // every frame so far, in order: shown[i] is frame i+1
	escs   int      // ESC key presses the model has handled
}

// recorder wraps the model to record each frame after each update.
type recorder struct {
	m Model
	s *screen
}

func (r recorder) Init() tea.Cmd { return r.m.Init() }

func (r recorder) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	next, cmd := r.m.Update(msg)
	m := next.(Model)
	k, isKey := msg.(tea.KeyPressMsg)
	r.s.record(m, isKey && k.String() == "esc")
	return recorder{m: m, s: r.s}, cmd
}

func (r recorder) View() tea.View { return r.m.View() }

func (s *screen) record(m Model, esc bool) {
	frame := ansi.Strip(m.Render())
	s.mu.Lock()
	s.frame, s.model = frame, m
	s.frames++
	s.shown = append(s.shown, frame)
	if esc {
		s.escs++
	}
	s.mu.Unlock()
	s.cond.Broadcast()
}

func startScreen(t *testing.T, opt Options, width, height int) *screen {
	t.Helper()
	pr, pw := io.Pipe()
	s := &screen{t: t, keys: pw, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	s.program = tea.NewProgram(recorder{m: New(opt), s: s},
		tea.WithInput(pr),
		tea.WithOutput(io.Discard),
		tea.WithWindowSize(width, height),
		tea.WithColorProfile(colorprofile.ANSI),
		tea.WithEnvironment([]string{"TERM=xterm-256color"}),
		tea.WithoutSignalHandler(),
	)
	go func() {
		defer close(s.done)
		if _, err := s.program.Run(); err != nil {
			t.Errorf("program: %v", err)
		}
	}()
	t.Cleanup(func() {
		s.program.Quit()
		<-s.done
		pw.Close()
	})
	return s
}

// waitTimeout only bounds a hung test; no assertion depends on timing.
const waitTimeout = 20 * time.Second

// waitFor blocks until the screen shows a frame for which ok is true, and
// returns that frame and model.
func (s *screen) waitFor(what string, ok func(frame string, m Model) bool) (string, Model) {
	s.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	stop := time.AfterFunc(waitTimeout, s.cond.Broadcast)
	defer stop.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for !(s.frames > 0 && ok(s.frame, s.model)) {
		if time.Now().After(deadline) {
			s.t.Fatalf("screen never showed %s; last frame:\n%s", what, s.frame)
		}
		s.cond.Wait()
	}
	return s.frame, s.model
}

// waitText waits for a frame containing every one of texts.
func (s *screen) waitText(texts ...string) string {
	s.t.Helper()
	f, _ := s.waitFor(strings.Join(texts, " and "), func(f string, _ Model) bool {
		for _, t := range texts {
			if !strings.Contains(f, t) {
				return false
			}
		}
		return true
	})
	return f
}

// waitShown waits until some frame after the first since frames (see
// frameCount) contained every one of texts, even if a later frame already
// replaced it: for states the screen shows only for a moment.
func (s *screen) waitShown(since int, texts ...string) {
	s.t.Helper()
	s.waitFor(strings.Join(texts, " and ")+" (at any time)", func(string, Model) bool {
	frames:
		for _, f := range s.shown[since:] {
			for _, t := range texts {
				if !strings.Contains(f, t) {
					continue frames
				}
			}
			return true
		}
		return false
	})
}

// waitIdle waits until the model has data and no query in flight or owed.
func (s *screen) waitIdle(what string, ok func(frame string, m Model) bool) (string, Model) {
	s.t.Helper()
	return s.waitFor(what, func(f string, m Model) bool {
		idle := m.havePage && !m.pageBusy && !m.pageAgain && !m.detailBusy && !m.debouncing && !m.dirty
		if m.mode == modeDetail {
			idle = idle && m.haveDet
		}
		return idle && ok(f, m)
	})
}

// press types keys as a terminal sends them: text as itself, named keys as
// their sequences.
func (s *screen) press(keys ...string) {
	s.t.Helper()
	seq := map[string]string{"enter": "\r", "esc": "\x1b", "backspace": "\x7f", "down": "\x1b[B", "up": "\x1b[A", "ctrl+u": "\x15"}
	for _, k := range keys {
		b, ok := seq[k]
		if !ok {
			b = k
		}
		escs := s.escCount()
		if _, err := s.keys.Write([]byte(b)); err != nil {
			s.t.Fatalf("typing %q: %v", k, err)
		}
		if k == "esc" {
			// A lone ESC is told apart from the start of a sequence by a
			// pause; wait until the model has handled it as ESC, so the
			// next key is not read as part of it. (Any new frame would not
			// do: the clock's tick or a query's answer makes frames too.)
			s.waitFor("esc handled", func(string, Model) bool { return s.escs > escs })
		}
	}
}

func (s *screen) frameCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frames
}

func (s *screen) escCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.escs
}

// golden compares a frame with testdata/name.golden, or rewrites it with
// -update. Every line must fit the width.
func golden(t *testing.T, name, frame string, width int) {
	t.Helper()
	for i, l := range strings.Split(frame, "\n") {
		if w := ansi.StringWidth(l); w > width {
			t.Errorf("%s: line %d is %d cells wide, the screen %d: %q", name, i+1, w, width, l)
		}
	}
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(frame), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./pkg/tui -update to create it)", err)
	}
	if string(want) != frame {
		t.Errorf("%s differs from %s (run with -update if the change is intended)\n--- got ---\n%s\n--- want ---\n%s", name, path, frame, want)
	}
}

func background(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

func windowSize(w, h int) tea.Msg { return tea.WindowSizeMsg{Width: w, Height: h} }

type uuidT = uuid.UUID

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func ansiWidth(s string) int { return ansi.StringWidth(s) }
