package tui

import (
	"strings"
	"testing"
	"time"
)

// rowsOf returns the table rows of a frame: the lines after the header up to
// the status line.
func rowsOf(frame string) []string {
	lines := strings.Split(frame, "\n")
	header := 0
	for i, l := range lines {
		if strings.HasPrefix(l, "  MACHINE") {
			header = i
			break
		}
	}
	var rows []string
	for _, l := range lines[header+1 : len(lines)-2] {
		if strings.TrimSpace(l) != "" {
			rows = append(rows, l)
		}
	}
	return rows
}

func loaded(total int) func(string, Model) bool {
	return func(_ string, m Model) bool { return m.page.Total == total }
}

func TestTableGolden(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, false), 160, 20)
	frame, _ := s.waitIdle("the golden fleet", loaded(9))
	golden(t, "table_160x20", frame, 160)

	// A narrow terminal drops the least needed columns instead of wrapping.
	s.program.Send(windowSize(90, 16))
	frame, _ = s.waitIdle("the narrow table", func(_ string, m Model) bool { return m.width == 90 })
	golden(t, "table_90x16", frame, 90)
}

func TestDetailGolden(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, false), 120, 50)
	s.waitIdle("the golden fleet", loaded(9))
	// Jump to the recovering machine by provider id, then open it.
	s.press(":", "m-006", "enter")
	s.waitIdle("the cursor on m-006", func(f string, m Model) bool {
		r, ok := m.selected()
		return ok && r.ID == idRecovering
	})
	s.press("enter")
	frame, _ := s.waitIdle("the detail of m-006", func(f string, m Model) bool {
		return m.mode == modeDetail && m.detail.ID == idRecovering
	})
	golden(t, "detail_120x50", frame, 120)

	s.press("esc")
	s.waitIdle("the table again", func(f string, m Model) bool { return m.mode == modeTable })
}

func stateColumn(row string) string {
	f := strings.Fields(strings.TrimPrefix(row, "▸"))
	// MACHINE PROVIDER LOCATION ADDRESS STATE ... on a wide screen; the
	// unprovided machine shows "-" for each provided column.
	return f[4]
}

func TestFilter(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, false), 160, 20)
	s.waitIdle("the golden fleet", loaded(9))

	// A state, named by any unique part of it.
	s.press("/", "state:stale", "enter")
	frame, m := s.waitIdle("only the stale machine", loaded(1))
	if rows := rowsOf(frame); len(rows) != 1 || stateColumn(rows[0]) != "heartbeat_stale" {
		t.Fatalf("state:stale shows %q (query %+v)", rows, m.query)
	}
	if !strings.Contains(frame, "rows 1-1 of 1 (of 9)") || !strings.Contains(frame, "filter state:stale") {
		t.Errorf("the status does not say the list is filtered:\n%s", frame)
	}

	// esc clears the filter.
	s.press("esc")
	s.waitIdle("the whole fleet again", loaded(9))

	// A process: machines with work or a backoff of it.
	s.press("/", "process:agentstart", "enter")
	frame, _ = s.waitIdle("AgentStart's machines", loaded(2))
	rows := rowsOf(frame)
	if len(rows) != 2 || !strings.Contains(rows[0], "m-003") || !strings.Contains(rows[1], "m-005") {
		t.Fatalf("process:agentstart shows %q", rows)
	}

	// Text, typed live: each key narrows the list; backspace widens it.
	s.press("/", "backspace")
	for range len("process:agentstart") {
		s.press("backspace")
	}
	s.press("sjc")
	frame, _ = s.waitIdle("the machines in sjc1", loaded(3))
	for _, r := range rowsOf(frame) {
		if !strings.Contains(r, "sjc1") {
			t.Errorf("text filter sjc shows %q", r)
		}
	}
	// !text keeps the machines the text does not match.
	s.press("enter", "/", "ctrl+u", "!sjc", "enter")
	frame, _ = s.waitIdle("the machines outside sjc1", loaded(6))
	for _, r := range rowsOf(frame) {
		if strings.Contains(r, "sjc1") {
			t.Errorf("filter !sjc shows %q", r)
		}
	}
	s.press("/", "ctrl+u", "process:agentstart", "enter")
	s.waitIdle("AgentStart's machines again", loaded(2))
	s.press("/", "ctrl+u", "sjc")
	s.waitIdle("the machines in sjc1 again", loaded(3))
	// esc while typing restores the filter from before the prompt.
	s.press("esc")
	_, m = s.waitIdle("the previous filter back", loaded(2))
	if m.filter != "process:agentstart" {
		t.Errorf("esc in the prompt left filter %q, want the previous one", m.filter)
	}

	// An unknown process says so on one line and matches nothing.
	s.press("/", "backspace")
	for range len("process:agentstart") {
		s.press("backspace")
	}
	s.press("process:nope", "enter")
	s.waitText("unknown process", "no machines match")
	// So does an ambiguous state.
	s.press("/", "ctrl+u", "state:heartbeat", "enter")
	s.waitText(`state "heartbeat" is ambiguous: awaiting_heartbeat, no_heartbeat, heartbeat_stale`)
}

func TestSort(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, false), 160, 20)
	s.waitIdle("the golden fleet", loaded(9))

	states := func(frame string) []string {
		var out []string
		for _, r := range rowsOf(frame) {
			out = append(out, stateColumn(r))
		}
		return out
	}
	// STATE sorts in the order of a machine's life, not alphabetically.
	life := []string{"unprovided", "new", "agent_starting", "awaiting_heartbeat", "healthy", "no_heartbeat", "heartbeat_stale", "recovering", "backed_off"}
	s.press("5")
	frame, _ := s.waitIdle("sorted by state", func(_ string, m Model) bool { return m.query.Sort == ColState && !m.query.Desc })
	if got := states(frame); strings.Join(got, " ") != strings.Join(life, " ") {
		t.Errorf("sorted by state: %v, want %v", got, life)
	}
	if !strings.Contains(frame, "STATE▲") {
		t.Errorf("the header does not mark the sort column:\n%s", frame)
	}
	// The same key again reverses.
	s.press("5")
	frame, _ = s.waitIdle("sorted by state, reversed", func(_ string, m Model) bool { return m.query.Sort == ColState && m.query.Desc })
	got := states(frame)
	for i := range life {
		if got[i] != life[len(life)-1-i] {
			t.Fatalf("reverse state sort: %v", got)
		}
	}
	// Every column sorts; heartbeat puts the freshest last and the never
	// heart-beat after them.
	s.press("8")
	frame, _ = s.waitIdle("sorted by heartbeat", func(_ string, m Model) bool { return m.query.Sort == ColHeartbeat })
	rows := rowsOf(frame)
	if !strings.Contains(rows[0], "m-006") || !strings.Contains(rows[1], "m-004") || !strings.Contains(rows[2], "m-001") {
		t.Errorf("sorted by heartbeat (oldest first):\n%s", strings.Join(rows, "\n"))
	}
	for c := ColMachine; c < numColumns; c++ {
		s.press(string(rune('1' + c)))
		s.waitIdle("sorted by "+c.String(), func(_ string, m Model) bool { return m.query.Sort == c && m.lastErr == "" && m.page.Total == 9 })
	}
}

func TestMoveAndRefreshKeepCursor(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	// A screen of 4 rows over 9 machines: moving past the window scrolls and
	// fetches the next one.
	s := startScreen(t, goldenOptions(pool, false), 160, 10)
	_, m := s.waitIdle("the golden fleet", loaded(9))
	if h := m.visibleRows(); h != 4 {
		t.Fatalf("visible rows %d, want 4", h)
	}
	s.press("G")
	frame, _ := s.waitIdle("the last machine", func(_ string, m Model) bool { return m.cursor == 8 })
	if !strings.Contains(frame, "▸ 90000000") || !strings.Contains(frame, "rows 6-9 of 9") {
		t.Errorf("after G:\n%s", frame)
	}
	s.press("g")
	frame, _ = s.waitIdle("the first machine", func(_ string, m Model) bool { return m.cursor == 0 })
	if !strings.Contains(frame, "▸ 10000000") {
		t.Errorf("after g:\n%s", frame)
	}
	s.press("down", "down")
	frame, _ = s.waitIdle("the third machine", func(_ string, m Model) bool { return m.cursor == 2 })
	if !strings.Contains(frame, "▸ 30000000") {
		t.Errorf("after two downs:\n%s", frame)
	}
}

func TestHelpAndReadOnly(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, false), 160, 30)
	s.waitIdle("the golden fleet", loaded(9))
	s.press("?")
	s.waitText("pause", "request recovery", "Read-only: start with --allow-actions")
	s.press("x")
	s.waitText("MACHINE▲")

	// Read-only: the action keys say how to enable them and change nothing.
	s.press(":", "m-005", "enter")
	s.waitIdle("the cursor on m-005", func(_ string, m Model) bool { r, ok := m.selected(); return ok && r.ID == idBackedOff })
	s.press("b")
	s.waitText("read-only: start with --allow-actions to clear backoffs")
	var n int
	if err := pool.QueryRow(background(t), `SELECT count(*) FROM work_backoff WHERE machine_id = $1`, idBackedOff).Scan(&n); err != nil || n != 1 {
		t.Fatalf("backoffs of m-005 after b in read-only mode: %d, %v", n, err)
	}
}

// Every frame fits the screen, at any size, in both views.
func TestEverySizeFits(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, false), 120, 30)
	s.waitIdle("the golden fleet", loaded(9))
	check := func(view string) {
		for _, size := range [][2]int{{200, 60}, {160, 45}, {100, 20}, {80, 24}, {60, 12}, {40, 8}, {20, 5}} {
			w, h := size[0], size[1]
			s.program.Send(windowSize(w, h))
			frame, _ := s.waitIdle(view+" resized", func(_ string, m Model) bool { return m.width == w && m.height == h })
			lines := strings.Split(frame, "\n")
			if len(lines) > h {
				t.Errorf("%s at %dx%d: %d lines", view, w, h, len(lines))
			}
			for i, l := range lines {
				if lw := ansiWidth(l); lw > w {
					t.Errorf("%s at %dx%d: line %d is %d wide: %q", view, w, h, i+1, lw, l)
				}
			}
		}
	}
	check("table")
	s.press("enter")
	s.waitIdle("the detail", func(_ string, m Model) bool { return m.mode == modeDetail })
	check("detail")
}

// ctrl+c quits from anywhere, even while typing a filter.
func TestQuitFromPrompt(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, false), 120, 20)
	s.waitIdle("the golden fleet", loaded(9))
	s.press("/", "abc", "\x03")
	select {
	case <-s.done:
	case <-time.After(waitTimeout):
		t.Fatal("ctrl+c in the filter prompt did not quit")
	}
}
