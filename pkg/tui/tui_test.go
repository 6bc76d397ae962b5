package tui

import (
	"strings"
	"testing"
)

// rowsOf returns the table rows of a frame: the lines after the header up to
// the status line.
func rowsOf(frame string) []string {
	lines := strings.Split(frame, "\n")
	var rows []string
	for _, l := range lines[3 : len(lines)-2] {
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
