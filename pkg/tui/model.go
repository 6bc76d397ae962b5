package tui

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"charm.land/bubbles/v2/help"
	"charm.land/bubbles/v2/key"
	"charm.land/bubbles/v2/viewport"
	tea "charm.land/bubbletea/v2"
	"github.com/google/uuid"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Options configure the view.
type Options struct {
	Source Source
	// Events come from Listen; nil means no live updates (only the periodic
	// refresh).
	Events <-chan ListenEvent
	// AllowActions enables the mutating keys, each behind a confirmation.
	AllowActions bool
	// Refresh is the fallback periodic refresh, for changes no trigger
	// announces (ages, heartbeats going stale). Default 10s.
	Refresh time.Duration
	// Debounce coalesces bursts of notifications into one refresh. Default
	// 200ms.
	Debounce time.Duration
	// Clock and Location make rendering reproducible in tests. Defaults:
	// time.Now and time.Local.
	Clock    func() time.Time
	Location *time.Location
	// QueryTimeout bounds each query. Default 5s.
	QueryTimeout time.Duration
	// Initial filter ("/" syntax) and machine to put the cursor on.
	Filter string
	Jump   string
	Log    *slog.Logger
}

type mode int

const (
	modeTable mode = iota
	modeDetail
)

type prompt int

const (
	promptNone prompt = iota
	promptFilter
	promptJump
	promptConfirm
	promptReason   // the reason of a hold or release
	promptDuration // how long a hold lasts
)

// Model is the bubbletea model of the watch view.
type Model struct {
	opt  Options
	keys keyMap
	help help.Model

	width, height int
	mode          mode
	showHelp      bool

	// Table state. cursor and top are absolute positions in the ordered,
	// filtered machines; page holds the rows fetched around them.
	query    Query
	filter   string
	cursor   int
	top      int
	page     Page
	havePage bool

	// Refresh state: at most one page and one detail query in flight; a
	// change arriving meanwhile marks the view dirty and is served after.
	pageSeq      int
	pageBusy     bool
	pageAgain    bool
	detailBusy   bool
	detailAgain  bool
	debouncing   bool
	dirty        bool
	paused       bool
	pending      int // notifications seen while paused
	updatedAt    time.Time
	queryTook    time.Duration
	listenState  string // "", "live", "lost"
	listenErr    string
	listenRetry  time.Duration
	lastErr      string
	message      string
	messageStyle bool // true: error

	// Detail state.
	detailID uuid.UUID
	detail   Detail
	haveDet  bool
	viewport viewport.Model

	// Prompt state.
	prompt      prompt
	input       string
	prevFilter  string
	confirmText string
	confirmCmd  tea.Cmd
	action      Action // the hold, release or cancel being asked about
}

// New returns the model; run it with tea.NewProgram.
func New(opt Options) Model {
	if opt.Refresh <= 0 {
		opt.Refresh = 10 * time.Second
	}
	if opt.Debounce <= 0 {
		opt.Debounce = 200 * time.Millisecond
	}
	if opt.Clock == nil {
		opt.Clock = time.Now
	}
	if opt.Location == nil {
		opt.Location = time.Local
	}
	if opt.QueryTimeout <= 0 {
		opt.QueryTimeout = 5 * time.Second
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := Model{
		opt:      opt,
		keys:     newKeyMap(opt.AllowActions),
		help:     help.New(),
		width:    80,
		height:   24,
		query:    Query{Sort: ColMachine},
		viewport: viewport.New(),
	}
	if opt.Events == nil {
		m.listenState = "off"
	}
	if opt.Filter != "" {
		m.filter = opt.Filter
		m.applyFilter(opt.Filter)
	}
	if opt.Jump != "" {
		m.input = opt.Jump
	}
	return m
}

// Messages.
type (
	pageMsg struct {
		seq  int
		q    Query
		page Page
		took time.Duration
		err  error
	}
	detailMsg struct {
		id     uuid.UUID
		detail Detail
		err    error
	}
	locateMsg struct {
		ref string
		pos int
		err error
	}
	actionMsg struct {
		what string
		err  error
	}
	previewMsg struct {
		action Action
		lines  []string
		err    error
	}
	debounceMsg struct{}
	tickMsg     struct{}
	listenMsg   struct {
		ev ListenEvent
		ok bool
	}
)

// Init starts the first query, the listener and the clock.
func (m Model) Init() tea.Cmd {
	cmds := []tea.Cmd{m.tick(), m.waitEvent()}
	if m.input != "" {
		ref := m.input
		cmds = append(cmds, m.locate(ref))
	}
	return tea.Batch(cmds...)
}

func (m Model) tick() tea.Cmd {
	return tea.Tick(time.Second, func(time.Time) tea.Msg { return tickMsg{} })
}

func (m Model) waitEvent() tea.Cmd {
	ch := m.opt.Events
	if ch == nil {
		return nil
	}
	return func() tea.Msg {
		ev, ok := <-ch
		return listenMsg{ev: ev, ok: ok}
	}
}

// visibleRows is how many table rows fit: the screen minus the title,
// summary, header, status and help lines.
func (m Model) visibleRows() int {
	return max(1, m.height-4-len(m.summaryLines()))
}

// Update handles one message.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.help.SetWidth(msg.Width)
		m.viewport.SetWidth(msg.Width)
		m.viewport.SetHeight(max(1, msg.Height-3))
		m.renderDetail()
		m.keepCursorVisible()
		if !m.havePage {
			// The first query waits for the size, to fetch one screenful.
			return m, m.fetchPage()
		}
		return m, m.fetchIfOutside()

	case tickMsg:
		// Ages move; the periodic refresh catches what no trigger announces.
		var cmd tea.Cmd
		if !m.paused && m.havePage && m.opt.Clock().Sub(m.updatedAt) >= m.opt.Refresh {
			cmd = m.refresh()
		}
		return m, tea.Batch(m.tick(), cmd)

	case listenMsg:
		if !msg.ok {
			return m, nil
		}
		return m.onListen(msg.ev)

	case debounceMsg:
		m.debouncing = false
		if m.dirty && !m.paused {
			return m, m.refresh()
		}
		return m, nil

	case pageMsg:
		if msg.seq != m.pageSeq {
			return m, nil // an older query's answer
		}
		m.pageBusy = false
		if !sameList(msg.q, m.query) {
			// The filter or sort changed while the query ran: its rows
			// belong to another list.
			m.pageAgain = false
			return m, m.fetchPage()
		}
		if msg.err != nil {
			m.lastErr = msg.err.Error()
			m.opt.Log.Warn("page query failed", "err", msg.err)
		} else {
			m.lastErr = ""
			m.page = msg.page
			m.havePage = true
			m.updatedAt = m.opt.Clock()
			m.queryTook = msg.took
			m.opt.Log.Debug("page", "offset", msg.page.Offset, "rows", len(msg.page.Rows), "total", msg.page.Total, "took", msg.took)
			m.clampCursor()
		}
		if m.pageAgain {
			m.pageAgain = false
			return m, m.fetchPage()
		}
		return m, m.fetchIfOutside()

	case detailMsg:
		m.detailBusy = false
		if msg.id == m.detailID {
			if msg.err != nil {
				m.lastErr = msg.err.Error()
			} else {
				m.lastErr = ""
				m.detail = msg.detail
				m.haveDet = true
				m.updatedAt = m.opt.Clock()
				m.renderDetail()
			}
		}
		if m.detailAgain && m.mode == modeDetail {
			m.detailAgain = false
			return m, m.fetchDetail()
		}
		return m, nil

	case locateMsg:
		if msg.err != nil {
			m.setError(fmt.Sprintf("jump to %q: %v", msg.ref, msg.err))
			return m, nil
		}
		m.cursor = msg.pos
		m.top = max(0, msg.pos-m.visibleRows()/2)
		m.keepCursorVisible()
		return m, m.fetchPage()

	case previewMsg:
		return m.onPreview(msg)

	case actionMsg:
		if msg.err != nil {
			m.setError(msg.what + ": " + msg.err.Error())
		} else {
			m.setMessage(msg.what)
		}
		return m, m.refresh()

	case tea.KeyPressMsg:
		return m.onKey(msg)
	}
	if m.mode == modeDetail {
		var cmd tea.Cmd
		m.viewport, cmd = m.viewport.Update(msg)
		return m, cmd
	}
	return m, nil
}

func (m Model) onListen(ev ListenEvent) (tea.Model, tea.Cmd) {
	next := m.waitEvent()
	switch {
	case ev.Connected:
		m.listenState, m.listenErr = "live", ""
		m.opt.Log.Info("live updates connected")
		// Whatever changed while we were not listening.
		return m, tea.Batch(next, m.refresh())
	case ev.Lost != nil:
		m.listenState, m.listenErr, m.listenRetry = "lost", ev.Lost.Error(), ev.RetryIn
		return m, next
	}
	m.opt.Log.Debug("change", "channel", ev.Channel, "payload", ev.Payload)
	if m.paused {
		m.pending++
		m.dirty = true
		return m, next
	}
	m.dirty = true
	if m.debouncing {
		return m, next
	}
	m.debouncing = true
	return m, tea.Batch(next, tea.Tick(m.opt.Debounce, func(time.Time) tea.Msg { return debounceMsg{} }))
}

// refresh re-reads what is on screen.
func (m *Model) refresh() tea.Cmd {
	m.dirty = false
	if m.mode == modeDetail {
		return tea.Batch(m.fetchDetail(), m.fetchPage())
	}
	return m.fetchPage()
}

// fetchPage queries the window around the visible rows: a screenful above
// and below, so that scrolling shows rows at once while the next window
// loads.
func (m *Model) fetchPage() tea.Cmd {
	if m.pageBusy {
		m.pageAgain = true
		return nil
	}
	m.pageBusy = true
	m.pageSeq++
	seq := m.pageSeq
	h := m.visibleRows()
	q := m.query
	q.Offset = max(0, m.top-h)
	q.Limit = 3 * h
	src, timeout, clock := m.opt.Source, m.opt.QueryTimeout, m.opt.Clock
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := clock()
		p, err := src.Page(ctx, q)
		return pageMsg{seq: seq, q: q, page: p, took: clock().Sub(start), err: err}
	}
}

// fetchIfOutside fetches when the visible rows are not all in the page.
func (m *Model) fetchIfOutside() tea.Cmd {
	if !m.havePage {
		return nil
	}
	end := min(m.top+m.visibleRows(), m.page.Total)
	if m.top >= m.page.Offset && end <= m.page.Offset+len(m.page.Rows) {
		return nil
	}
	return m.fetchPage()
}

func (m *Model) fetchDetail() tea.Cmd {
	if m.detailBusy {
		m.detailAgain = true
		return nil
	}
	m.detailBusy = true
	id, src, timeout := m.detailID, m.opt.Source, m.opt.QueryTimeout
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		d, err := src.Detail(ctx, id)
		return detailMsg{id: id, detail: d, err: err}
	}
}

func (m *Model) locate(ref string) tea.Cmd {
	q, src, timeout := m.query, m.opt.Source, m.opt.QueryTimeout
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		pos, err := src.Locate(ctx, q, ref)
		return locateMsg{ref: ref, pos: pos, err: err}
	}
}

func (m *Model) clampCursor() {
	m.cursor = min(m.cursor, max(0, m.page.Total-1))
	m.keepCursorVisible()
}

func (m *Model) keepCursorVisible() {
	h := m.visibleRows()
	if m.cursor < m.top {
		m.top = m.cursor
	}
	if m.cursor >= m.top+h {
		m.top = m.cursor - h + 1
	}
	if m.havePage {
		m.top = max(0, min(m.top, m.page.Total-h))
	}
	m.top = max(0, m.top)
}

// selected is the row under the cursor, if fetched.
func (m Model) selected() (Row, bool) {
	i := m.cursor - m.page.Offset
	if !m.havePage || i < 0 || i >= len(m.page.Rows) {
		return Row{}, false
	}
	return m.page.Rows[i], true
}

func (m *Model) setMessage(s string) { m.message, m.messageStyle = s, false }
func (m *Model) setError(s string)   { m.message, m.messageStyle = s, true }

func (m Model) onKey(msg tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	if msg.String() == "ctrl+c" {
		return m, tea.Quit
	}
	if m.prompt != promptNone {
		return m.onPromptKey(msg)
	}
	k := m.keys
	if key.Matches(msg, k.Quit) {
		return m, tea.Quit
	}
	if m.showHelp {
		// Any key closes the full help.
		m.showHelp = false
		return m, nil
	}
	m.message = ""
	switch {
	case key.Matches(msg, k.Help):
		m.showHelp = true
		return m, nil
	case key.Matches(msg, k.Pause):
		m.paused = !m.paused
		if !m.paused {
			m.pending = 0
			if m.dirty {
				return m, m.refresh()
			}
		}
		return m, nil
	case key.Matches(msg, k.Refresh):
		return m, m.refresh()
	case key.Matches(msg, k.Copy):
		if id, ok := m.current(); ok {
			m.setMessage("copied " + id.String())
			return m, tea.SetClipboard(id.String())
		}
		return m, nil
	case key.Matches(msg, k.ClearBackoff):
		return m.askClearBackoff()
	case key.Matches(msg, k.Recover):
		return m.askRecovery()
	case key.Matches(msg, k.Hold):
		return m.askAction(ActionHold)
	case key.Matches(msg, k.Release):
		return m.askAction(ActionRelease)
	case key.Matches(msg, k.CancelWork):
		return m.askAction(ActionCancelWork)
	}
	if m.mode == modeDetail {
		return m.onDetailKey(msg)
	}
	return m.onTableKey(msg)
}

func (m Model) onTableKey(msg tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	k := m.keys
	h := m.visibleRows()
	total := m.page.Total
	move := func(to int) (tea.Model, tea.Cmd) {
		m.cursor = max(0, min(to, total-1))
		m.keepCursorVisible()
		return m, m.fetchIfOutside()
	}
	switch {
	case key.Matches(msg, k.Up):
		return move(m.cursor - 1)
	case key.Matches(msg, k.Down):
		return move(m.cursor + 1)
	case key.Matches(msg, k.PageUp):
		m.top = max(0, m.top-h)
		return move(m.cursor - h)
	case key.Matches(msg, k.PageDown):
		m.top = min(m.top+h, max(0, total-h))
		return move(m.cursor + h)
	case key.Matches(msg, k.Top):
		return move(0)
	case key.Matches(msg, k.Bottom):
		return move(total - 1)
	case key.Matches(msg, k.Detail):
		r, ok := m.selected()
		if !ok {
			return m, nil
		}
		return m, m.openDetail(r.ID)
	case key.Matches(msg, k.Back):
		if m.filter != "" {
			m.filter = ""
			m.applyFilter("")
			return m, m.fetchPage()
		}
		return m, nil
	case key.Matches(msg, k.Filter):
		m.prompt, m.input, m.prevFilter = promptFilter, m.filter, m.filter
		return m, nil
	case key.Matches(msg, k.Jump):
		m.prompt, m.input = promptJump, ""
		return m, nil
	case key.Matches(msg, k.Sort):
		c := Column(msg.String()[0] - '1')
		return m, m.sortBy(c, c == m.query.Sort && !m.query.Desc)
	case key.Matches(msg, k.SortNext):
		return m, m.sortBy((m.query.Sort+1)%numColumns, false)
	case key.Matches(msg, k.Reverse):
		return m, m.sortBy(m.query.Sort, !m.query.Desc)
	}
	return m, nil
}

func (m *Model) sortBy(c Column, desc bool) tea.Cmd {
	m.query.Sort, m.query.Desc = c, desc
	m.cursor, m.top = 0, 0
	return m.fetchPage()
}

func (m *Model) openDetail(id uuid.UUID) tea.Cmd {
	m.mode = modeDetail
	if m.detailID != id {
		m.haveDet = false
		m.viewport.SetYOffset(0)
	}
	m.detailID = id
	m.renderDetail()
	return m.fetchDetail()
}

func (m Model) onDetailKey(msg tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	k := m.keys
	switch {
	case key.Matches(msg, k.Back):
		m.mode = modeTable
		return m, m.fetchPage()
	case key.Matches(msg, k.Up):
		m.viewport.ScrollUp(1)
	case key.Matches(msg, k.Down):
		m.viewport.ScrollDown(1)
	case key.Matches(msg, k.PageUp):
		m.viewport.PageUp()
	case key.Matches(msg, k.PageDown):
		m.viewport.PageDown()
	case key.Matches(msg, k.Top):
		m.viewport.GotoTop()
	case key.Matches(msg, k.Bottom):
		m.viewport.GotoBottom()
	}
	return m, nil
}

// current is the machine the actions apply to: the one in the detail view,
// or under the cursor.
func (m Model) current() (uuid.UUID, bool) {
	if m.mode == modeDetail {
		return m.detailID, true
	}
	r, ok := m.selected()
	return r.ID, ok
}

func (m Model) askClearBackoff() (tea.Model, tea.Cmd) {
	if !m.opt.AllowActions {
		m.setError("read-only: start with --allow-actions to clear backoffs")
		return m, nil
	}
	id, ok := m.current()
	if !ok {
		return m, nil
	}
	process, until, cause := "", time.Time{}, ""
	now := m.opt.Clock()
	if m.mode == modeDetail && m.haveDet && m.detail.ID == id {
		for _, b := range m.detail.Backoffs {
			if b.Until.After(now) {
				process, until, cause = b.Process, b.Until, b.Cause
				break
			}
		}
	} else if r, ok := m.selected(); ok && r.BackoffProcess != "" {
		process, until, cause = r.BackoffProcess, r.BackoffUntil, r.BackoffCause
	}
	if process == "" {
		m.setError("machine " + shortID(id) + " has no active backoff")
		return m, nil
	}
	src := m.opt.Source
	m.prompt = promptConfirm
	// The question and its keys first: a narrow screen cuts the end.
	m.confirmText = fmt.Sprintf("Clear the %s backoff of %s (ends %s)? [y/N] It becomes a candidate again at once. Cause: %s",
		shortProcess(process), shortID(id), relTime(until, now), oneLine(cause))
	m.confirmCmd = func() tea.Msg {
		err := src.ClearBackoff(context.Background(), id, process)
		return actionMsg{what: fmt.Sprintf("cleared the %s backoff of %s", shortProcess(process), shortID(id)), err: err}
	}
	return m, nil
}

func (m Model) askRecovery() (tea.Model, tea.Cmd) {
	if !m.opt.AllowActions {
		m.setError("read-only: start with --allow-actions to request recovery")
		return m, nil
	}
	id, ok := m.current()
	if !ok {
		return m, nil
	}
	src := m.opt.Source
	m.prompt = promptConfirm
	m.confirmText = fmt.Sprintf("Request Recovery of %s now? [y/N] The shepherd will reboot it through its provider (after any active Recovery backoff).", shortID(id))
	m.confirmCmd = func() tea.Msg {
		err := src.RequestRecovery(context.Background(), id)
		return actionMsg{what: "requested recovery of " + shortID(id), err: err}
	}
	return m, nil
}

// actionNames say what each action does, for prompts and messages.
var actionNames = map[ActionKind]string{ActionHold: "hold", ActionRelease: "release the holds of", ActionCancelWork: "cancel the work on"}

// askAction starts a hold (reason, then duration), a release (reason) or a
// cancel; each is previewed as a dry run and confirmed before it is made.
func (m Model) askAction(kind ActionKind) (tea.Model, tea.Cmd) {
	if !m.opt.AllowActions {
		m.setError("read-only: start with --allow-actions to " + strings.Fields(actionNames[kind])[0] + " machines")
		return m, nil
	}
	id, ok := m.current()
	if !ok {
		return m, nil
	}
	m.action = Action{Kind: kind, Machine: id}
	if kind == ActionCancelWork {
		return m, m.preview()
	}
	m.prompt, m.input = promptReason, ""
	return m, nil
}

// preview asks the source what the pending action would change.
func (m Model) preview() tea.Cmd {
	a, src, timeout := m.action, m.opt.Source, m.opt.QueryTimeout
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		lines, err := src.Preview(ctx, a)
		return previewMsg{action: a, lines: lines, err: err}
	}
}

func (m Model) onPreview(msg previewMsg) (tea.Model, tea.Cmd) {
	a := msg.action
	what := actionNames[a.Kind] + " " + shortID(a.Machine)
	if msg.err != nil {
		m.setError(what + ": " + msg.err.Error())
		return m, nil
	}
	src := m.opt.Source
	m.prompt = promptConfirm
	m.confirmText = fmt.Sprintf("%s? [y/N] %s", upperFirst(what), strings.Join(msg.lines, "; "))
	m.confirmCmd = func() tea.Msg {
		err := src.Do(context.Background(), a)
		return actionMsg{what: "done: " + what, err: err}
	}
	return m, nil
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// onActionPrompt takes the reason and the duration of a hold or release.
func (m Model) onActionPrompt(s string) (tea.Model, tea.Cmd, bool) {
	if s == "esc" {
		m.prompt = promptNone
		m.setMessage("canceled")
		return m, nil, true
	}
	if s != "enter" {
		return m, nil, false
	}
	input := strings.TrimSpace(m.input)
	switch {
	case m.prompt == promptReason && m.action.Kind == ActionHold:
		if input == "" {
			m.prompt = promptNone
			m.setError("a hold needs a reason; nothing changed")
			return m, nil, true
		}
		m.action.Reason = input
		m.prompt, m.input = promptDuration, "4h"
		return m, nil, true
	case m.prompt == promptReason:
		m.action.Reason = input
	default:
		if input != "" {
			d, err := parseDuration(input)
			if err != nil {
				m.prompt = promptNone
				m.setError(err.Error() + "; nothing changed")
				return m, nil, true
			}
			m.action.Until = m.opt.Clock().Add(d)
		}
	}
	m.prompt = promptNone
	return m, m.preview(), true
}

// parseDuration reads how long a hold lasts: "90m", "4h", "2d".
func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days > 0 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration (30m, 4h, 2d)", s)
	}
	return d, nil
}

func (m Model) onPromptKey(msg tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	s := msg.String()
	if m.prompt == promptReason || m.prompt == promptDuration {
		if next, cmd, done := m.onActionPrompt(s); done {
			return next, cmd
		}
	}
	if m.prompt == promptConfirm {
		cmd := m.confirmCmd
		m.prompt, m.confirmCmd = promptNone, nil
		if s == "y" || s == "Y" {
			return m, cmd
		}
		m.setMessage("canceled")
		return m, nil
	}
	switch s {
	case "esc":
		if m.prompt == promptFilter {
			m.filter = m.prevFilter
			m.applyFilter(m.filter)
			m.prompt = promptNone
			return m, m.fetchPage()
		}
		m.prompt = promptNone
		return m, nil
	case "enter":
		p := m.prompt
		m.prompt = promptNone
		if p == promptJump {
			ref := strings.TrimSpace(m.input)
			if ref == "" {
				return m, nil
			}
			return m, m.locate(ref)
		}
		return m, nil
	case "backspace":
		if r := []rune(m.input); len(r) > 0 {
			m.input = string(r[:len(r)-1])
		}
	case "ctrl+u":
		m.input = ""
	default:
		if msg.Text == "" {
			return m, nil
		}
		m.input += msg.Text
	}
	if m.prompt == promptFilter {
		// The filter applies as it is typed; queries coalesce while one is
		// in flight.
		m.filter = m.input
		m.applyFilter(m.filter)
		return m, m.fetchPage()
	}
	return m, nil
}

// applyFilter parses "/" syntax: state:NAME and process:NAME (or proc:)
// terms, the rest is text (!text inverts it). The Source resolves state names (any unique part
// of one will do).
func (m *Model) applyFilter(f string) {
	var text []string
	m.query.State, m.query.Process = "", ""
	var problems []string
	for _, w := range strings.Fields(f) {
		name, value, ok := strings.Cut(w, ":")
		switch {
		case ok && strings.EqualFold(name, "state"):
			m.query.State = value
		case ok && (strings.EqualFold(name, "process") || strings.EqualFold(name, "proc")):
			p, err := bmdb.ParseProcess(value)
			if err != nil {
				problems = append(problems, err.Error())
				p = bmdb.Process(value)
			}
			m.query.Process = string(p)
		default:
			text = append(text, w)
		}
	}
	m.query.Text = strings.Join(text, " ")
	// k9s grammar: a leading ! keeps what the text does not match.
	m.query.Invert = strings.HasPrefix(m.query.Text, "!")
	m.query.Text = strings.TrimPrefix(m.query.Text, "!")
	m.cursor, m.top = 0, 0
	if len(problems) > 0 {
		m.setError(strings.Join(problems, "; "))
	} else if m.messageStyle {
		m.message = ""
	}
}

// sameList says whether two queries select and order the same list (they
// may differ in the window).
func sameList(a, b Query) bool {
	a.Offset, a.Limit, b.Offset, b.Limit = 0, 0, 0, 0
	return a == b
}

func shortID(id uuid.UUID) string { return id.String()[:8] }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
