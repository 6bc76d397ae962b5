package tui

import (
	"strings"

	"charm.land/lipgloss/v2"
)

// Styles use the 16 ANSI colours so the terminal's theme decides the exact
// shades. The program downsamples them to the terminal's profile, which
// removes colour entirely under NO_COLOR; every coloured cell also carries
// its meaning as text, so nothing is lost.
var (
	styleTitle    = lipgloss.NewStyle().Bold(true)
	styleDim      = lipgloss.NewStyle().Foreground(lipgloss.BrightBlack)
	styleHeader   = lipgloss.NewStyle().Bold(true).Underline(true)
	styleSelected = lipgloss.NewStyle().Reverse(true)
	styleError    = lipgloss.NewStyle().Foreground(lipgloss.Red).Bold(true)
	styleOK       = lipgloss.NewStyle().Foreground(lipgloss.Green)
	styleWarn     = lipgloss.NewStyle().Foreground(lipgloss.Yellow)
	styleSection  = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Blue)
	styleKey      = lipgloss.NewStyle().Bold(true)
	stylePrompt   = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Magenta)
)

// stateStyles colour derived machine states: green is converged, yellow is
// automation at work or waiting, red needs attention.
var stateStyles = map[string]lipgloss.Style{
	"healthy":           lipgloss.NewStyle().Foreground(lipgloss.Green),
	"new":               lipgloss.NewStyle().Foreground(lipgloss.Cyan),
	"agentstarting":     lipgloss.NewStyle().Foreground(lipgloss.Yellow),
	"startingagent":     lipgloss.NewStyle().Foreground(lipgloss.Yellow),
	"agentstarted":      lipgloss.NewStyle().Foreground(lipgloss.Cyan),
	"awaitingheartbeat": lipgloss.NewStyle().Foreground(lipgloss.Cyan),
	"heartbeatstale":    lipgloss.NewStyle().Foreground(lipgloss.Red),
	"stale":             lipgloss.NewStyle().Foreground(lipgloss.Red),
	"silent":            lipgloss.NewStyle().Foreground(lipgloss.Red),
	"noheartbeat":       lipgloss.NewStyle().Foreground(lipgloss.Red),
	"recovering":        lipgloss.NewStyle().Foreground(lipgloss.Magenta),
	"backedoff":         lipgloss.NewStyle().Foreground(lipgloss.Red).Bold(true),
	"busy":              lipgloss.NewStyle().Foreground(lipgloss.Yellow),
	"legacyaccess":      lipgloss.NewStyle().Foreground(lipgloss.Yellow),
	"unprovided":        lipgloss.NewStyle().Foreground(lipgloss.BrightBlack),
	"held":              lipgloss.NewStyle().Foreground(lipgloss.Yellow).Bold(true),
	"needsattention":    lipgloss.NewStyle().Foreground(lipgloss.Red).Bold(true).Underline(true),
	"observergap":       lipgloss.NewStyle().Foreground(lipgloss.Magenta),
	"breakeropen":       lipgloss.NewStyle().Foreground(lipgloss.Red).Bold(true),
	"recoveryrequested": lipgloss.NewStyle().Foreground(lipgloss.Magenta),
}

var processStyles = map[string]lipgloss.Style{
	"agentstart": lipgloss.NewStyle().Foreground(lipgloss.Cyan),
	"recovery":   lipgloss.NewStyle().Foreground(lipgloss.Magenta),
	"access":     lipgloss.NewStyle().Foreground(lipgloss.BrightBlack),
}

var eventStyles = map[string]lipgloss.Style{
	"started":           lipgloss.NewStyle().Foreground(lipgloss.Blue),
	"finished":          lipgloss.NewStyle().Foreground(lipgloss.Green),
	"failed":            lipgloss.NewStyle().Foreground(lipgloss.Red),
	"canceled":          lipgloss.NewStyle().Foreground(lipgloss.Yellow),
	"lost":              lipgloss.NewStyle().Foreground(lipgloss.Red).Bold(true),
	"backoffcleared":    lipgloss.NewStyle().Foreground(lipgloss.Cyan),
	"recoveryrequested": lipgloss.NewStyle().Foreground(lipgloss.Magenta),
	"holdplaced":        lipgloss.NewStyle().Foreground(lipgloss.Yellow),
	"holdreleased":      lipgloss.NewStyle().Foreground(lipgloss.Cyan),
	"holdexpired":       lipgloss.NewStyle().Foreground(lipgloss.Cyan),
	"attentionmarked":   lipgloss.NewStyle().Foreground(lipgloss.Red).Bold(true),
	"attentioncleared":  lipgloss.NewStyle().Foreground(lipgloss.Cyan),
}

// normal folds a name for style lookup: "heartbeat stale", "heartbeat-stale"
// and "HeartbeatStale" are one.
func normal(s string) string {
	s = strings.ToLower(s)
	return strings.NewReplacer(" ", "", "-", "", "_", "").Replace(s)
}

func stateStyle(state string) lipgloss.Style      { return stateStyles[normal(state)] }
func processStyle(p string) lipgloss.Style        { return processStyles[normal(shortProcess(p))] }
func eventStyle(ev string) lipgloss.Style         { return eventStyles[normal(ev)] }
func shortProcess(p string) string                { return strings.TrimPrefix(p, "Shepherd") }
func styled(s lipgloss.Style, text string) string { return s.Render(text) }
