package tui

import (
	"fmt"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"
)

// View renders the screen. Only the visible rows are rendered, so the cost
// does not depend on the size of the fleet.
func (m Model) View() tea.View {
	v := tea.NewView(m.Render())
	v.AltScreen = true
	v.WindowTitle = "bmctl machines watch"
	return v
}

// Render is the screen as a string, every line cut to the width.
func (m Model) Render() string {
	var lines []string
	switch {
	case m.showHelp:
		lines = m.helpLines()
	case m.mode == modeDetail:
		lines = m.detailLines()
	default:
		lines = m.tableLines()
	}
	for i, l := range lines {
		lines[i] = ansi.Truncate(l, m.width, "")
	}
	if len(lines) > m.height {
		lines = lines[:max(1, m.height)]
	}
	return strings.Join(lines, "\n")
}

// titleLine is the name of the view on the left and the freshness of the
// data on the right.
func (m Model) titleLine(title string) string {
	status := m.statusIndicator()
	gap := m.width - lipgloss.Width(title) - lipgloss.Width(status)
	if gap < 1 {
		return title + " " + status
	}
	return title + strings.Repeat(" ", gap) + status
}

func (m Model) statusIndicator() string {
	now := m.opt.Clock()
	var parts []string
	switch {
	case m.paused:
		parts = append(parts, styled(styleWarn, fmt.Sprintf("⏸ PAUSED (%d changes waiting, p resumes)", m.pending)))
	case m.listenState == "lost":
		parts = append(parts, styled(styleError, fmt.Sprintf("✗ connection lost, retrying in %s", shortDuration(m.listenRetry))))
	case m.listenState == "live":
		parts = append(parts, styled(styleOK, "● live"))
	case m.listenState == "off":
		parts = append(parts, styled(styleDim, "○ polling every "+shortDuration(m.opt.Refresh)))
	default:
		parts = append(parts, styled(styleDim, "○ connecting"))
	}
	if m.lastErr != "" {
		parts = append(parts, styled(styleError, "✗ query failed"))
	}
	if m.updatedAt.IsZero() {
		parts = append(parts, "loading…")
	} else {
		parts = append(parts, fmt.Sprintf("updated %s (%s ago, query %s)",
			m.updatedAt.In(m.opt.Location).Format("15:04:05"), shortDuration(now.Sub(m.updatedAt)), millis(m.queryTook)))
	}
	return strings.Join(parts, " · ")
}

// summaryLines are the fleet at a glance: machines per state, then work and
// backoffs per process, wrapped between items to the width (at most three
// lines).
func (m Model) summaryLines() []string {
	s := m.page.Summary
	noun := " machines"
	if s.Machines == 1 {
		noun = " machine"
	}
	items := []string{styled(styleTitle, fmt.Sprint(s.Machines)) + noun}
	if len(s.States) > 0 {
		items = append(items, "│")
	}
	for i, c := range s.States {
		items = append(items, fmt.Sprint(c.N)+" "+styled(stateStyle(c.Name), c.Name)+comma(i, len(s.States)))
	}
	counts := func(label string, cs []Count) {
		items = append(items, "│")
		if len(cs) == 0 {
			items = append(items, label+" none")
		}
		for i, c := range cs {
			if i == 0 {
				label += " "
			} else {
				label = ""
			}
			items = append(items, label+fmt.Sprint(c.N)+" "+styled(processStyle(c.Name), shortProcess(c.Name))+comma(i, len(cs)))
		}
	}
	counts("work:", s.Work)
	counts("backoffs:", s.Backoffs)

	var lines []string
	line := ""
	for _, it := range items {
		switch {
		case line == "":
			line = it
		case lipgloss.Width(line)+1+lipgloss.Width(it) <= m.width:
			line += " " + it
		default:
			lines = append(lines, line)
			line = it
			if it == "│" {
				line = ""
			}
		}
	}
	lines = append(lines, line)
	// The brakes' alerts come first, one line each (cut to the width).
	var banner []string
	for _, a := range s.Alerts {
		banner = append(banner, styled(styleError, ansi.Truncate("⚠ "+a, m.width, "…")))
	}
	lines = append(banner, lines...)
	// On a short screen the rows matter more than the summary.
	return lines[:min(len(lines), 3+len(banner), max(0, m.height-6))]
}

// layout decides column widths for the screen width: fixed columns keep
// their width, PROVIDER, WORK and BACKOFF share the rest by weight, and on
// narrow screens the least needed columns go first.
func (m Model) layout() (cols []Column, widths []int) {
	minWidth := [numColumns]int{8, 20, 10, 17, 18, 12, 12, 9}
	weight := [numColumns]int{ColProvider: 2, ColWork: 4, ColBackoff: 3}
	dropOrder := []Column{ColAddress, ColLocation, ColHeartbeat, ColBackoff, ColProvider}
	shown := [numColumns]bool{}
	for c := range shown {
		shown[c] = true
	}
	avail := m.width - 2 // the cursor marker
	need := func() int {
		n, k := 0, 0
		for c := Column(0); c < numColumns; c++ {
			if shown[c] {
				n += minWidth[c]
				k++
			}
		}
		return n + k - 1
	}
	for _, c := range dropOrder {
		if need() <= avail {
			break
		}
		shown[c] = false
	}
	rest, weights := max(0, avail-need()), 0
	for c := Column(0); c < numColumns; c++ {
		if shown[c] {
			weights += weight[c]
		}
	}
	given := 0
	for c := Column(0); c < numColumns; c++ {
		if !shown[c] {
			continue
		}
		w := minWidth[c]
		if weight[c] > 0 {
			extra := rest * weight[c] / weights
			given += extra
			w += extra
		}
		cols = append(cols, c)
		widths = append(widths, w)
	}
	// Rounding leftovers go to the last flexible column.
	for i := len(cols) - 1; i >= 0; i-- {
		if weight[cols[i]] > 0 {
			widths[i] += rest - given
			break
		}
	}
	return cols, widths
}

func (m Model) tableLines() []string {
	now := m.opt.Clock()
	filter := ""
	if m.filter != "" {
		filter = " · filter " + styled(stylePrompt, m.filter)
	}
	lines := append([]string{m.titleLine(styled(styleTitle, "bmctl machines watch") + filter)}, m.summaryLines()...)
	cols, widths := m.layout()
	header := make([]string, len(cols))
	for i, c := range cols {
		title := c.String()
		if c == m.query.Sort {
			title += map[bool]string{false: "▲", true: "▼"}[m.query.Desc]
		}
		header[i] = pad(title, widths[i])
	}
	lines = append(lines, "  "+styled(styleHeader, strings.Join(header, " ")))

	h := m.visibleRows()
	for i := m.top; i < m.top+h; i++ {
		if !m.havePage || i >= m.page.Total {
			if i == 0 {
				if m.havePage {
					lines = append(lines, styled(styleDim, "  no machines match"+filter))
				} else {
					lines = append(lines, styled(styleDim, "  loading…"))
				}
			} else {
				lines = append(lines, "")
			}
			continue
		}
		j := i - m.page.Offset
		if j < 0 || j >= len(m.page.Rows) {
			lines = append(lines, styled(styleDim, "  …"))
			continue
		}
		lines = append(lines, m.rowLine(m.page.Rows[j], cols, widths, i == m.cursor, now))
	}
	lines = append(lines, m.statusLine(), m.help.ShortHelpView(m.keys.tableShort()))
	return lines
}

func (m Model) rowLine(r Row, cols []Column, widths []int, selected bool, now time.Time) string {
	cells := make([]string, len(cols))
	for i, c := range cols {
		text, style := cell(r, c, now)
		text = pad(text, widths[i])
		if !selected && style != nil {
			text = style.Render(text)
		}
		cells[i] = text
	}
	line := strings.Join(cells, " ")
	if selected {
		return styled(styleSelected, "▸ "+line)
	}
	return "  " + line
}

// cell is a column's text for a row and the style that colours it.
func cell(r Row, c Column, now time.Time) (string, *lipgloss.Style) {
	switch c {
	case ColMachine:
		return shortID(r.ID), nil
	case ColProvider:
		if r.Provider == "" {
			return "-", nil
		}
		return r.Provider + "/" + r.ProviderID, nil
	case ColLocation:
		return dash(r.Location), nil
	case ColAddress:
		return dash(r.Address), nil
	case ColState:
		s := stateStyle(r.State)
		return r.State, &s
	case ColWork:
		if r.WorkProcess == "" {
			return "-", nil
		}
		parts := []string{shortProcess(r.WorkProcess), shortDuration(now.Sub(r.WorkStarted))}
		if r.WorkDetail != "" {
			parts = append(parts, r.WorkDetail)
		}
		parts = append(parts, "by "+holder(r.WorkComponent, r.WorkHost))
		s := processStyle(r.WorkProcess)
		return strings.Join(parts, " "), &s
	case ColBackoff:
		if r.BackoffProcess == "" {
			return "-", nil
		}
		s := processStyle(r.BackoffProcess)
		return fmt.Sprintf("%s %s: %s", shortProcess(r.BackoffProcess), shortDuration(r.BackoffUntil.Sub(now)), oneLine(r.BackoffCause)), &s
	case ColHeartbeat:
		if r.HeartbeatAt.IsZero() {
			if r.AgentStarted {
				return "never", nil
			}
			return "-", nil
		}
		return shortDuration(now.Sub(r.HeartbeatAt)) + " ago", nil
	}
	return "", nil
}

func holder(component, host string) string {
	if host == "" {
		return component
	}
	return component + "@" + host
}

func (m Model) statusLine() string {
	switch m.prompt {
	case promptFilter:
		return styled(stylePrompt, "/") + m.input + "█  " + styled(styleDim, "text, state:NAME, process:NAME · enter keeps · esc restores")
	case promptJump:
		return styled(stylePrompt, "jump to machine: ") + m.input + "█  " + styled(styleDim, "UUID, prefix or provider id · enter jumps · esc cancels")
	case promptConfirm:
		return styled(styleWarn, m.confirmText)
	case promptReason:
		return styled(stylePrompt, actionNames[m.action.Kind]+" "+shortID(m.action.Machine)+", reason: ") + m.input + "█  " + styled(styleDim, "enter continues · esc cancels")
	case promptDuration:
		return styled(stylePrompt, "hold "+shortID(m.action.Machine)+" for: ") + m.input + "█  " + styled(styleDim, "30m, 4h, 2d; empty: until released · enter continues · esc cancels")
	}
	if m.lastErr != "" {
		shown := ""
		if !m.updatedAt.IsZero() {
			shown = " (showing data from " + m.updatedAt.In(m.opt.Location).Format("15:04:05") + ")"
		}
		return styled(styleError, "✗ "+oneLine(m.lastErr)+shown)
	}
	if m.message != "" {
		if m.messageStyle {
			return styled(styleError, m.message)
		}
		return styled(styleOK, m.message)
	}
	if m.mode == modeDetail {
		return styled(styleDim, "machine "+m.detailID.String())
	}
	if !m.havePage {
		return ""
	}
	first, last := 0, 0
	if m.page.Total > 0 {
		first, last = m.top+1, min(m.top+m.visibleRows(), m.page.Total)
	}
	s := fmt.Sprintf("rows %d-%d of %d", first, last, m.page.Total)
	if m.page.Total != m.page.Summary.Machines {
		s += fmt.Sprintf(" (of %d)", m.page.Summary.Machines)
	}
	dir := "ascending"
	if m.query.Desc {
		dir = "descending"
	}
	s += fmt.Sprintf(" · sorted by %s %s", m.query.Sort, dir)
	if !m.opt.AllowActions {
		s += " · read-only"
	}
	return styled(styleDim, s)
}

func (m Model) helpLines() []string {
	lines := []string{m.titleLine(styled(styleTitle, "bmctl machines watch · keys")), ""}
	lines = append(lines, strings.Split(m.help.FullHelpView(m.keys.full()), "\n")...)
	lines = append(lines, "",
		"Filter: text matches machine id, provider id, address, location and work step (!text: the others);",
		"state:NAME keeps one state (any unique part of its name);",
		"process:NAME keeps machines with work or a backoff of that process (AgentStart, Recovery, Access).",
		"Columns: 1 MACHINE 2 PROVIDER 3 LOCATION 4 ADDRESS 5 STATE 6 WORK 7 BACKOFF 8 HEARTBEAT.",
		"Updates arrive through LISTEN/NOTIFY; a periodic refresh every "+shortDuration(m.opt.Refresh)+" catches ages.",
	)
	if m.opt.AllowActions {
		lines = append(lines, "Actions are enabled; each asks for confirmation and is recorded in the machine's history.")
	} else {
		lines = append(lines, "Read-only: start with --allow-actions to clear backoffs and request recovery.")
	}
	lines = append(lines, "", styled(styleDim, "press any key to close"))
	return lines
}

func comma(i, n int) string {
	if i < n-1 {
		return ","
	}
	return ""
}

// pad cuts or fills s to exactly w cells.
func pad(s string, w int) string {
	if lipgloss.Width(s) > w {
		s = ansi.Truncate(s, w, "…")
	}
	if n := w - lipgloss.Width(s); n > 0 {
		s += strings.Repeat(" ", n)
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortDuration is an age in one or two units: 45s, 3m, 2h5m, 4d.
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		h, mnt := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if mnt == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, mnt)
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// relTime is "3m ago" or "in 4m".
func relTime(t, now time.Time) string {
	if t.After(now) {
		return "in " + shortDuration(t.Sub(now))
	}
	return shortDuration(now.Sub(t)) + " ago"
}

func millis(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
