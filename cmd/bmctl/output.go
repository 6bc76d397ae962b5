package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Printing shared by the inspection commands: tables for people (aligned,
// fitted to the terminal), JSON for scripts (stable snake_case names from
// pkg/fleet's types), times as local time plus age.

// outputFormat validates -o against the formats a command offers.
func outputFormat(o string, allowed ...string) (string, error) {
	for _, a := range allowed {
		if o == a {
			return o, nil
		}
	}
	return "", usageError{fmt.Errorf("unknown output format %q (want %s)", o, strings.Join(allowed, " or "))}
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJSONList prints items as a JSON array with one compact element per
// line ("[]" when empty), streamed through a buffer: a whole fleet's list is
// never held twice in memory, and each line is one object for grep and head.
func writeJSONList[T any](w io.Writer, items []T) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteByte('[')
	for i := range items {
		if i > 0 {
			bw.WriteByte(',')
		}
		bw.WriteByte('\n')
		b, err := json.Marshal(items[i])
		if err != nil {
			return err
		}
		bw.Write(b)
	}
	if len(items) > 0 {
		bw.WriteByte('\n')
	}
	bw.WriteString("]\n")
	return bw.Flush()
}

// table is rows of cells under headers. Columns marked flexible give up
// width (their cells cut with "…") when the table is wider than the terminal.
type table struct {
	headers  []string
	flexible map[int]bool
	rows     [][]string
	noHeader bool // for the rows of a stream after its first
	width    int  // the width lines are cut at, 0 for none
}

func newTable(headers ...string) *table {
	return &table{headers: headers, flexible: map[int]bool{}}
}

// flex marks columns (by header) that may be cut to fit.
func (t *table) flex(headers ...string) *table {
	for _, h := range headers {
		for i, th := range t.headers {
			if th == h {
				t.flexible[i] = true
			}
		}
	}
	return t
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

const colGap = 2

// minFlexWidth is how narrow a flexible column gets before others give way.
const minFlexWidth = 10

// shrink narrows columns until the table fits width: first the flexible
// ones down to minFlexWidth, widest first; then any column down to its
// header's width, widest first. What still does not fit is cut at the
// line's end by render.
func (t *table) shrink(widths []int, width int) {
	total := -colGap
	for _, n := range widths {
		total += n + colGap
	}
	for _, onlyFlexible := range []bool{true, false} {
		for total > width {
			widest := -1
			for i := range widths {
				floor := utf8.RuneCountInString(t.headers[i])
				if onlyFlexible {
					floor = max(floor, minFlexWidth)
				}
				if (t.flexible[i] || !onlyFlexible) && widths[i] > floor && (widest < 0 || widths[i] > widths[widest]) {
					widest = i
				}
			}
			if widest < 0 {
				break
			}
			widths[widest]--
			total--
		}
	}
}

// write prints the table fitted to width columns (0: no limit). Fitting
// only cuts flexible columns, widest first; if that is not enough the
// table is left wider.
func (t *table) write(w io.Writer, width int) error {
	widths := make([]int, len(t.headers))
	for i, h := range t.headers {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			if n := utf8.RuneCountInString(c); i < len(widths) && n > widths[i] {
				widths[i] = n
			}
		}
	}
	if width > 0 {
		t.shrink(widths, width)
	}
	t.width = width
	return t.render(w, widths)
}

// writeFixed prints the table with preset column widths (0: as wide as the
// cell), for streams whose rows print before the widest is known.
func (t *table) writeFixed(w io.Writer, widths []int) error {
	ws := make([]int, len(t.headers))
	for i := range ws {
		if i < len(widths) && widths[i] > 0 {
			ws[i] = widths[i]
		} else {
			ws[i] = utf8.RuneCountInString(t.headers[i])
			for _, r := range t.rows {
				ws[i] = max(ws[i], utf8.RuneCountInString(r[i]))
			}
		}
	}
	return t.render(w, ws)
}

func (t *table) render(w io.Writer, widths []int) error {
	var b, l []byte
	line := func(cells []string) {
		l = l[:0]
		last := len(cells) - 1
		for i, c := range cells {
			n := utf8.RuneCountInString(c)
			if n > widths[i] {
				c, n = fit(c, widths[i]), widths[i]
			}
			l = append(l, c...)
			if i < last {
				l = appendSpaces(l, widths[i]-n+colGap)
			}
		}
		if t.width > 0 {
			l = append(l[:0], fit(strings.TrimRight(string(l), " "), t.width)...)
		}
		b = append(b, l...)
		b = append(b, '\n')
	}
	if !t.noHeader {
		line(t.headers)
	}
	for _, r := range t.rows {
		line(r)
		if len(b) > 64<<10 {
			if _, err := w.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	_, err := w.Write(b)
	return err
}

const spaces = "                                                                "

func appendSpaces(b []byte, n int) []byte {
	for n > len(spaces) {
		b = append(b, spaces...)
		n -= len(spaces)
	}
	return append(b, spaces[:n]...)
}

// jsonLine prints v as one line of JSON (JSON Lines, for streams).
func jsonLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// fit cuts s to n runes, marking the cut with "…".
func fit(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n < 1 {
		return ""
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// terminalWidth is the width tables must fit: $COLUMNS if set, else the
// terminal's width when w is one, else 0 (no limit: piped output is never cut).
func terminalWidth(w io.Writer) int {
	if c, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && c > 0 {
		return c
	}
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 {
		return 0
	}
	return int(ws.Col)
}

// printTable writes t to the app's output, fitted to its terminal.
func (a *app) printTable(t *table) error {
	return t.write(a.Out, terminalWidth(a.Out))
}

// timeLayout is how tables show an instant: local time, to the second.
const timeLayout = "2006-01-02 15:04:05"

// localTime is t in local time, or "-" for the zero time.
func localTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(timeLayout)
}

// zoneName names the local zone for table headers ("TIME (CET)").
func zoneName() string {
	name, _ := time.Now().Zone()
	return name
}

// age says how far t is from now: "3m ago", "in 4m", "now"; "-" for the
// zero time. Two units from an hour up ("2h5m ago"), so ages stay short
// and still tell an hour from the next.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	s := span(d)
	switch {
	case s == "":
		return "now"
	case future:
		return "in " + s
	default:
		return s + " ago"
	}
}

// span is d rounded down to its largest unit (two units from an hour up),
// "" under a second.
func span(d time.Duration) string {
	secs := int64(d / time.Second)
	unit := func(n int64, u string) string { return strconv.FormatInt(n, 10) + u }
	switch {
	case secs < 1:
		return ""
	case secs < 60:
		return unit(secs, "s")
	case secs < 3600:
		return unit(secs/60, "m")
	case secs < 86400:
		h, m := secs/3600, secs%3600/60
		if m == 0 {
			return unit(h, "h")
		}
		return unit(h, "h") + unit(m, "m")
	default:
		dd, h := secs/86400, secs%86400/3600
		if h == 0 {
			return unit(dd, "d")
		}
		return unit(dd, "d") + unit(h, "h")
	}
}

// timeAndAge is "2026-11-25 10:04:05 (3m ago)", or "-".
func timeAndAge(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return localTime(t) + " (" + age(t, now) + ")"
}

// orDash is s, or "-" when empty, so table cells never vanish.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortProcess drops the "Shepherd" prefix every process has today.
func shortProcess(p string) string {
	return strings.TrimPrefix(p, "Shepherd")
}
