package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAge(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		0:                               "now",
		-500 * time.Millisecond:         "now",
		-45 * time.Second:               "45s ago",
		-3*time.Minute - 59*time.Second: "3m ago",
		4 * time.Minute:                 "in 4m",
		-2 * time.Hour:                  "2h ago",
		-2*time.Hour - 5*time.Minute:    "2h5m ago",
		26 * time.Hour:                  "in 1d2h",
		-72 * time.Hour:                 "3d ago",
	} {
		if got := age(now.Add(d), now); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
	if got := age(time.Time{}, now); got != "-" {
		t.Errorf("age of zero time = %q", got)
	}
}

// TestTableFitsWidth: tables cut flexible columns to fit the terminal and
// no line exceeds it; with no width (a pipe) nothing is cut.
func TestTableFitsWidth(t *testing.T) {
	tb := newTable("MACHINE", "STATE", "CAUSE").flex("CAUSE")
	tb.add("0123abcd", "backed_off", strings.Repeat("connection refused ", 10))
	tb.add("4567ef01", "healthy", "-")
	for _, width := range []int{40, 60, 200} {
		var b strings.Builder
		if err := tb.write(&b, width); err != nil {
			t.Fatal(err)
		}
		for _, l := range outLines(b.String()) {
			if n := utf8.RuneCountInString(l); n > width {
				t.Errorf("width %d: line of %d: %q", width, n, l)
			}
		}
		if width < 200 && !strings.Contains(b.String(), "…") {
			t.Errorf("width %d: long cause not cut:\n%s", width, b.String())
		}
	}
	var b strings.Builder
	if err := tb.write(&b, 0); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "…") {
		t.Errorf("unlimited width cut a cell:\n%s", b.String())
	}

	// Through a command: $COLUMNS is the terminal's width.
	f, _ := seedViews(t)
	t.Setenv("COLUMNS", "70")
	for _, args := range [][]string{{"machines", "list"}, {"machines", "list", "-o", "wide"}, {"backoff", "list"}, {"history", "srv-backoff"}} {
		for _, l := range outLines(f.ok(args...)) {
			if n := utf8.RuneCountInString(l); n > 70 {
				t.Errorf("%v: line of %d columns: %q", args, n, l)
			}
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.Local)
	for in, want := range map[string]time.Time{
		"90m":                  now.Add(-90 * time.Minute),
		"3d":                   now.Add(-72 * time.Hour),
		"2026-11-25 10:00":     time.Date(2026, 11, 25, 10, 0, 0, 0, time.Local),
		"2026-11-24":           time.Date(2026, 11, 24, 0, 0, 0, 0, time.Local),
		"2026-11-25T09:00:00Z": time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseSince("last tuesday", now); err == nil {
		t.Error("parseSince accepted nonsense")
	}
}

// TestTableLateWideCell: a table of many blocks of rows sizes each column by
// its widest cell wherever it comes, here in the last row, and keeps every
// row in order.
func TestTableLateWideCell(t *testing.T) {
	tb := newTable("MACHINE", "PROVIDER ID", "STATE")
	var rows [][]string
	for i := 0; len(rows) < 3 || i < 3*tableBlock/30; i++ {
		rows = append(rows, []string{fmt.Sprintf("%08x", i), fmt.Sprintf("srv-%d", i), "healthy"})
	}
	rows = append(rows, []string{"ffffffff", "rack-ü7-" + strings.Repeat("x", 40), "heartbeat_stale"})
	for _, r := range rows {
		tb.add(r...)
	}
	if len(tb.blocks) < 2 {
		t.Fatalf("%d rows fill %d blocks; the test wants several", len(rows), len(tb.blocks))
	}
	var got strings.Builder
	if err := tb.write(&got, 0); err != nil {
		t.Fatal(err)
	}
	if want := plainTable(tb.headers, rows); got.String() != want {
		g, w := outLines(got.String()), outLines(want)
		for i := range min(len(g), len(w)) {
			if g[i] != w[i] {
				t.Fatalf("line %d of %d/%d:\n%q\nwant\n%q", i, len(g), len(w), g[i], w[i])
			}
		}
		t.Fatalf("%d lines, want %d", len(g), len(w))
	}
}

// TestSpool: what is written across a spool's blocks comes back in order.
func TestSpool(t *testing.T) {
	var s spool
	var want strings.Builder
	for i := 0; want.Len() < 3<<20; i++ {
		line := fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i%5000))
		s.Write([]byte(line))
		want.WriteString(line)
	}
	var got strings.Builder
	if n, err := s.WriteTo(&got); err != nil || n != int64(want.Len()) || got.String() != want.String() {
		t.Errorf("spool gave back %d bytes (%v), equal: %v; want %d", n, err, got.String() == want.String(), want.Len())
	}
	if len(s.blocks) < 3 {
		t.Errorf("%d bytes in %d blocks", want.Len(), len(s.blocks))
	}
}
