package main

import (
	"bufio"
	"bytes"
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
	l := newJSONList(w)
	for i := range items {
		if err := l.add(&items[i]); err != nil {
			return err
		}
	}
	return l.close()
}

// jsonList prints writeJSONList's format one element at a time, for lists
// printed as they are read.
type jsonList struct {
	w *bufio.Writer
	n int
}

func newJSONList(w io.Writer) *jsonList {
	l := &jsonList{w: bufio.NewWriterSize(w, 64<<10)}
	l.w.WriteByte('[')
	return l
}

func (l *jsonList) add(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if l.n > 0 {
		l.w.WriteByte(',')
	}
	l.n++
	l.w.WriteByte('\n')
	_, err = l.w.Write(b)
	return err
}

// close ends the array and flushes it.
func (l *jsonList) close() error {
	if l.n > 0 {
		l.w.WriteByte('\n')
	}
	l.w.WriteString("]\n")
	return l.w.Flush()
}

// spool keeps output to print later (once a query is done), in blocks of a
// megabyte: unlike a growing buffer it never copies what it holds, which
// for a whole fleet is tens of megabytes.
type spool struct{ blocks [][]byte }

func (s *spool) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(s.blocks) == 0 || len(s.blocks[len(s.blocks)-1]) == 1<<20 {
			s.blocks = append(s.blocks, make([]byte, 0, 1<<20))
		}
		b := &s.blocks[len(s.blocks)-1]
		k := min(len(p), cap(*b)-len(*b))
		*b = append(*b, p[:k]...)
		p = p[k:]
	}
	return n, nil
}

func (s *spool) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, b := range s.blocks {
		k, err := w.Write(b)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// table is rows of cells under headers. Columns marked flexible give up
// width (their cells cut with "…") when the table is wider than the terminal.
//
// Rows are kept as text, not as a []string each: cells back to back in
// blocks of about tableBlock bytes, with where each cell ends. A whole
// fleet's table is then a few dozen allocations that the garbage collector
// need not scan and that are never copied to grow, and the column widths
// are kept as rows are added.
type table struct {
	headers  []string
	flexible map[int]bool
	blocks   []cellBlock // full blocks, each of whole rows
	text     []byte      // the block being filled: add appends here
	ends     []uint32    // where its cells end in text
	widths   []int       // the widest cell of each column so far (header included), in runes
	noHeader bool        // for the rows of a stream after its first
	width    int         // the width lines are cut at, 0 for none
}

type cellBlock struct {
	text []byte
	ends []uint32
}

// cell is the k-th cell of the block.
func (b cellBlock) cell(k int) []byte {
	start := uint32(0)
	if k > 0 {
		start = b.ends[k-1]
	}
	return b.text[start:b.ends[k]]
}

const tableBlock = 1 << 20

func newTable(headers ...string) *table {
	t := &table{headers: headers, flexible: map[int]bool{}, widths: make([]int, len(headers))}
	for i, h := range headers {
		t.widths[i] = utf8.RuneCountInString(h)
	}
	return t
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

// add appends a row.
func (t *table) add(cells ...string) {
	for _, c := range cells {
		t.text = append(t.text, c...)
		t.endCell()
	}
}

// endCell ends the cell appended to t.text since the previous one, for rows
// built in place (appendAge and friends) rather than from strings.
func (t *table) endCell() {
	start := uint32(0)
	if len(t.ends) > 0 {
		start = t.ends[len(t.ends)-1]
	}
	t.ends = append(t.ends, uint32(len(t.text)))
	col := (len(t.ends) - 1) % len(t.headers)
	if n := utf8.RuneCount(t.text[start:]); n > t.widths[col] {
		t.widths[col] = n
	}
	if col == len(t.headers)-1 && len(t.text) >= tableBlock {
		t.blocks = append(t.blocks, cellBlock{t.text, t.ends})
		t.text = make([]byte, 0, tableBlock+tableBlock/8)
		t.ends = make([]uint32, 0, len(t.ends)+len(t.ends)/8)
	}
}

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
	widths := append([]int(nil), t.widths...)
	if width > 0 {
		t.shrink(widths, width)
	}
	t.width = width
	return t.render(w, widths)
}

// writeFixed prints the table with preset column widths (0: as wide as the
// cell), for streams whose rows print before the widest is known.
func (t *table) writeFixed(w io.Writer, widths []int) error {
	ws := append([]int(nil), t.widths...)
	for i := range ws {
		if i < len(widths) && widths[i] > 0 {
			ws[i] = widths[i]
		}
	}
	return t.render(w, ws)
}

func (t *table) render(w io.Writer, widths []int) error {
	var b []byte
	if !t.noHeader {
		var h cellBlock
		for _, c := range t.headers {
			h.text = append(h.text, c...)
			h.ends = append(h.ends, uint32(len(h.text)))
		}
		b = t.appendLine(b, widths, h, 0)
	}
	for _, blk := range append(t.blocks[:len(t.blocks):len(t.blocks)], cellBlock{t.text, t.ends}) {
		for r := range len(blk.ends) / len(t.headers) {
			b = t.appendLine(b, widths, blk, r)
			if len(b) > 64<<10 {
				if _, err := w.Write(b); err != nil {
					return err
				}
				b = b[:0]
			}
		}
	}
	_, err := w.Write(b)
	return err
}

// appendLine appends row r of blk padded to widths, its cells cut with "…"
// where wider, and the line cut at t.width.
func (t *table) appendLine(b []byte, widths []int, blk cellBlock, r int) []byte {
	start := len(b)
	last := len(widths) - 1
	for i, n := range widths {
		c := blk.cell(r*len(widths) + i)
		if cn := utf8.RuneCount(c); cn > n {
			b = append(b, fit(string(c), n)...)
		} else {
			b = append(b, c...)
			if i < last {
				b = appendSpaces(b, n-cn)
			}
		}
		if i < last {
			b = appendSpaces(b, colGap)
		}
	}
	if t.width > 0 {
		l := bytes.TrimRight(b[start:], " ")
		if utf8.RuneCount(l) > t.width {
			l = []byte(fit(string(l), t.width))
		}
		b = append(b[:start], l...)
	}
	return append(b, '\n')
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
func age(t, now time.Time) string { return string(appendAge(nil, t, now)) }

// appendAge appends age(t, now) to b, for tables built without a string per cell.
func appendAge(b []byte, t, now time.Time) []byte {
	if t.IsZero() {
		return append(b, '-')
	}
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	switch {
	case d < time.Second:
		return append(b, "now"...)
	case future:
		return appendSpan(append(b, "in "...), d)
	default:
		return append(appendSpan(b, d), " ago"...)
	}
}

// span is d rounded down to its largest unit (two units from an hour up),
// "" under a second.
func span(d time.Duration) string { return string(appendSpan(nil, d)) }

func appendSpan(b []byte, d time.Duration) []byte {
	secs := int64(d / time.Second)
	unit := func(b []byte, n int64, u byte) []byte { return append(strconv.AppendInt(b, n, 10), u) }
	switch {
	case secs < 1:
		return b
	case secs < 60:
		return unit(b, secs, 's')
	case secs < 3600:
		return unit(b, secs/60, 'm')
	case secs < 86400:
		h, m := secs/3600, secs%3600/60
		if m == 0 {
			return unit(b, h, 'h')
		}
		return unit(unit(b, h, 'h'), m, 'm')
	default:
		dd, h := secs/86400, secs%86400/3600
		if h == 0 {
			return unit(b, dd, 'd')
		}
		return unit(unit(b, dd, 'd'), h, 'h')
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
