package tui

import (
	"fmt"
	"strings"
	"time"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"
)

// renderDetail puts the detail of the machine into the viewport, wrapped to
// the width. It runs when the detail or the size changes, not on every frame.
func (m *Model) renderDetail() {
	if m.mode != modeDetail {
		return
	}
	if !m.haveDet {
		m.viewport.SetContent(styled(styleDim, "loading…"))
		return
	}
	m.viewport.SetContent(strings.Join(m.detailContent(), "\n"))
}

func (m Model) detailLines() []string {
	title := styled(styleTitle, "machine "+m.detailID.String())
	if m.haveDet {
		title += "  " + styled(stateStyle(m.detail.State), m.detail.State)
	}
	lines := []string{m.titleLine(title)}
	lines = append(lines, strings.Split(m.viewport.View(), "\n")...)
	return append(lines, m.statusLine(), m.help.ShortHelpView(m.keys.detailShort()))
}

func (m Model) detailContent() []string {
	d := m.detail
	now := m.opt.Clock()
	at := func(t time.Time) string { return m.stamp(t, now) }
	var out []string
	section := func(name string) {
		if len(out) > 0 {
			out = append(out, "")
		}
		out = append(out, styled(styleSection, name))
	}
	field := func(name, value string) {
		out = append(out, m.wrapIndented(fmt.Sprintf("  %-11s", name), value)...)
	}

	section("Tags")
	field("created", at(d.CreatedAt))
	if d.Provider != "" {
		field("provided", fmt.Sprintf("%s/%s · address %s · location %s · status %s",
			d.Provider, d.ProviderID, dash(d.Address), dash(d.Location), dash(d.ProviderStatus)))
	} else {
		field("provided", "no (not at any provider)")
	}
	if d.AgentStartedAt.IsZero() {
		field("agent", "not started")
	} else {
		field("agent", "started "+at(d.AgentStartedAt)+" · key "+dash(d.AgentKey))
	}
	if d.HeartbeatAt.IsZero() {
		field("heartbeat", "never")
	} else {
		field("heartbeat", at(d.HeartbeatAt))
	}
	if d.HardwareAt.IsZero() {
		field("hardware", "not reported")
	} else {
		field("hardware", "reported "+at(d.HardwareAt))
	}
	if d.SSHHostKey == "" {
		field("ssh host", "no key pinned")
	} else {
		field("ssh host", "key "+d.SSHHostKey+" pinned "+at(d.SSHHostKeyPinned))
	}
	if !d.RecoveryRequested.IsZero() {
		field("recovery", "requested "+at(d.RecoveryRequested)+" by "+dash(d.RecoveryRequester))
	}
	field("state", styled(stateStyle(d.State), d.State))

	section("Why (bmctl explain)")
	for _, w := range d.Why {
		verdict := styled(styleOK, "candidate now")
		if !w.Candidate {
			verdict = styled(styleWarn, "not a candidate")
		}
		out = append(out, m.wrapIndented("  ", styled(processStyle(w.Process), shortProcess(w.Process))+": "+verdict)...)
		for _, f := range w.Failing {
			out = append(out, m.wrapIndented("    ✗ ", f)...)
		}
		if !w.Next.IsZero() {
			out = append(out, m.wrapIndented("    ", "next eligible "+at(w.Next))...)
		}
	}

	section("Work")
	if len(d.Work) == 0 {
		out = append(out, "  none")
	}
	for _, w := range d.Work {
		head := styled(processStyle(w.Process), shortProcess(w.Process))
		if w.Detail != "" {
			head += " · " + w.Detail
		}
		head += " · since " + at(w.Started)
		out = append(out, m.wrapIndented("  ", head)...)
		field("session", fmt.Sprintf("%s %s on %s pid %d version %s", shortID(w.SessionID), w.Component, dash(w.Host), w.PID, dash(w.Version)))
		field("deadline", at(w.Deadline))
	}

	section("Backoffs")
	if len(d.Backoffs) == 0 {
		out = append(out, "  none")
	}
	for _, b := range d.Backoffs {
		status := styled(styleError, "active until")
		if !b.Until.After(now) {
			status = styled(styleDim, "expired")
		}
		head := fmt.Sprintf("%s %s %s · last interval %s",
			styled(processStyle(b.Process), shortProcess(b.Process)), status, at(b.Until), shortDuration(b.LastInterval))
		out = append(out, m.wrapIndented("  ", head)...)
		field("cause", oneLine(b.Cause))
	}

	events := "events"
	if len(d.History) == 1 {
		events = "event"
	}
	section(fmt.Sprintf("History (%d %s, newest first)", len(d.History), events))
	if len(d.History) == 0 {
		out = append(out, "  none")
	}
	for _, h := range d.History {
		head := fmt.Sprintf("  %s  %s %s", m.stampShort(h.At, now),
			styled(processStyle(h.Process), pad(shortProcess(h.Process), 10)),
			styled(eventStyle(h.Event), pad(h.Event, 17)))
		who := h.Actor
		if who == "" {
			who = holder(h.Component, h.Host)
		}
		if who != "" {
			who = "by " + who
		}
		text := who
		if h.Cause != "" {
			if text != "" {
				text += ": "
			}
			text += oneLine(h.Cause)
		}
		out = append(out, m.wrapIndented(head+" ", text)...)
	}
	return out
}

// wrapIndented writes head then text, wrapping text under itself.
func (m Model) wrapIndented(head, text string) []string {
	indent := lipgloss.Width(head)
	w := max(10, m.width-indent)
	wrapped := strings.Split(ansi.Wrap(text, w, " "), "\n")
	out := make([]string, len(wrapped))
	for i, l := range wrapped {
		if i == 0 {
			out[i] = head + l
		} else {
			out[i] = strings.Repeat(" ", indent) + l
		}
	}
	return out
}

// stamp is local time and age, as everywhere in bmctl: "2026-01-02 15:04:05 (3m ago)".
func (m Model) stamp(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(m.opt.Location).Format("2006-01-02 15:04:05") + " (" + relTime(t, now) + ")"
}

func (m Model) stampShort(t, now time.Time) string {
	lt := t.In(m.opt.Location)
	layout := "Jan 02 15:04"
	if lt.Format("20060102") == now.In(m.opt.Location).Format("20060102") {
		layout = "15:04:05"
	}
	return pad(lt.Format(layout), 12) + " " + pad(relTime(t, now), 10)
}
