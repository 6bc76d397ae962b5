package tui

import "charm.land/bubbles/v2/key"

// keyMap follows the grammar operators' fingers know from k9s and less:
// / filters, : jumps, ? helps, esc goes back, vi keys move.
type keyMap struct {
	Up, Down, PageUp, PageDown, Top, Bottom             key.Binding
	Detail, Back, Filter, Jump, Sort, SortNext, Reverse key.Binding
	Pause, Refresh, Copy, Help, Quit                    key.Binding
	ClearBackoff, Recover, Hold, Release, CancelWork    key.Binding
}

func newKeyMap(allowActions bool) keyMap {
	k := keyMap{
		Up:       key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "up")),
		Down:     key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "down")),
		PageUp:   key.NewBinding(key.WithKeys("pgup", "ctrl+b"), key.WithHelp("pgup", "page up")),
		PageDown: key.NewBinding(key.WithKeys("pgdown", "ctrl+f", "space"), key.WithHelp("pgdn", "page down")),
		Top:      key.NewBinding(key.WithKeys("home", "g"), key.WithHelp("g", "first")),
		Bottom:   key.NewBinding(key.WithKeys("end", "G"), key.WithHelp("G", "last")),
		Detail:   key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "detail")),
		Back:     key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "back")),
		Filter: key.NewBinding(key.WithKeys("/"),
			key.WithHelp("/", "filter")),
		Jump:     key.NewBinding(key.WithKeys(":"), key.WithHelp(":", "jump to machine")),
		Sort:     key.NewBinding(key.WithKeys("1", "2", "3", "4", "5", "6", "7", "8"), key.WithHelp("1-8", "sort")),
		SortNext: key.NewBinding(key.WithKeys("s"), key.WithHelp("s", "sort by next column")),
		Reverse:  key.NewBinding(key.WithKeys("S"), key.WithHelp("S", "reverse sort")),
		Pause:    key.NewBinding(key.WithKeys("p"), key.WithHelp("p", "pause")),
		Refresh:  key.NewBinding(key.WithKeys("ctrl+r"), key.WithHelp("ctrl+r", "refresh now")),
		Copy:     key.NewBinding(key.WithKeys("c"), key.WithHelp("c", "copy machine id")),
		Help:     key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "help")),
		Quit:     key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
		ClearBackoff: key.NewBinding(key.WithKeys("b"),
			key.WithHelp("b", "clear backoff")),
		Recover: key.NewBinding(key.WithKeys("r"),
			key.WithHelp("r", "request recovery")),
		Hold:       key.NewBinding(key.WithKeys("h"), key.WithHelp("h", "hold")),
		Release:    key.NewBinding(key.WithKeys("u"), key.WithHelp("u", "release holds")),
		CancelWork: key.NewBinding(key.WithKeys("x"), key.WithHelp("x", "cancel work")),
	}
	if !allowActions {
		// Read-only: the keys do nothing and the help says how to enable them.
		k.ClearBackoff = key.NewBinding(key.WithKeys("b"), key.WithHelp("b", "clear backoff (off)"))
		k.Recover = key.NewBinding(key.WithKeys("r"), key.WithHelp("r", "recovery (off)"))
		k.Hold = key.NewBinding(key.WithKeys("h"), key.WithHelp("h", "hold (off)"))
		k.Release = key.NewBinding(key.WithKeys("u"), key.WithHelp("u", "release (off)"))
		k.CancelWork = key.NewBinding(key.WithKeys("x"), key.WithHelp("x", "cancel work (off)"))
	}
	return k
}

func (k keyMap) tableShort() []key.Binding {
	return []key.Binding{k.Up, k.Down, k.Detail, k.Filter, k.Jump, k.Sort, k.Pause, k.Help, k.Quit}
}

func (k keyMap) detailShort() []key.Binding {
	return []key.Binding{k.Up, k.Down, k.Back, k.ClearBackoff, k.Recover, k.Copy, k.Help, k.Quit}
}

func (k keyMap) full() [][]key.Binding {
	return [][]key.Binding{
		{k.Up, k.Down, k.PageUp, k.PageDown, k.Top, k.Bottom},
		{k.Detail, k.Back, k.Filter, k.Jump, k.Sort, k.SortNext, k.Reverse},
		{k.Pause, k.Refresh, k.Copy, k.Help, k.Quit},
		{k.ClearBackoff, k.Recover, k.Hold, k.Release, k.CancelWork},
	}
}
