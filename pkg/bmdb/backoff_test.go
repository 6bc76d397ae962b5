package bmdb

import (
	"testing"
	"time"
)

func sequence(b Backoff, n int) []int64 {
	var out []int64
	var prev int64
	for range n {
		prev = b.Next(prev)
		out = append(out, prev)
	}
	return out
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBackoffDesignSequence(t *testing.T) {
	b := Backoff{Initial: time.Second, Maximum: time.Hour, Exponent: 1.1}
	want := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17}
	if got := sequence(b, len(want)); !equal(got, want) {
		t.Fatalf("sequence = %v, want %v", got, want)
	}
}

func TestBackoffCapsAtMaximum(t *testing.T) {
	b := Backoff{Initial: 10 * time.Second, Maximum: 30 * time.Second, Exponent: 2}
	want := []int64{10, 20, 30, 30, 30}
	if got := sequence(b, len(want)); !equal(got, want) {
		t.Fatalf("sequence = %v, want %v", got, want)
	}
}

func TestBackoffConstantForExponentAtMostOne(t *testing.T) {
	for _, exp := range []float64{1, 0.5, 0, -3} {
		b := Backoff{Initial: 7 * time.Second, Maximum: time.Minute, Exponent: exp}
		want := []int64{7, 7, 7, 7}
		if got := sequence(b, len(want)); !equal(got, want) {
			t.Errorf("exponent %v: sequence = %v, want %v", exp, got, want)
		}
	}
}

func TestBackoffNormalisesZeroValues(t *testing.T) {
	cases := []struct {
		name string
		b    Backoff
		want []int64
	}{
		{"zero policy", Backoff{}, []int64{1, 1, 1}},
		{"initial below a second", Backoff{Initial: 300 * time.Millisecond, Exponent: 2}, []int64{1, 1, 1}},
		{"maximum below initial", Backoff{Initial: 5 * time.Second, Maximum: time.Second, Exponent: 2}, []int64{5, 5, 5}},
		{"no maximum", Backoff{Initial: 2 * time.Second, Exponent: 3}, []int64{2, 2, 2}},
	}
	for _, c := range cases {
		if got := sequence(c.b, len(c.want)); !equal(got, c.want) {
			t.Errorf("%s: sequence = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestBackoffDefaults(t *testing.T) {
	if got := sequence(AgentStartBackoff, 3); !equal(got, []int64{300, 360, 432}) {
		t.Errorf("AgentStart = %v", got)
	}
	if got := sequence(RecoveryBackoff, 3); !equal(got, []int64{60, 72, 87}) {
		t.Errorf("Recovery = %v", got)
	}
	// Both cap at their maximum eventually.
	if got := sequence(AgentStartBackoff, 100); got[99] != 4*3600 {
		t.Errorf("AgentStart cap = %d", got[99])
	}
	if got := sequence(RecoveryBackoff, 100); got[99] != 3600 {
		t.Errorf("Recovery cap = %d", got[99])
	}
}
