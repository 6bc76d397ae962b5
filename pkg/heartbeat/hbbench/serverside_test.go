package hbbench

import (
	"math"
	"testing"
	"time"
)

// TestQuantileOfTheDelta: only what was observed between the two reads
// counts, and a quantile is its bucket's upper bound.
func TestQuantileOfTheDelta(t *testing.T) {
	bounds := []float64{0.001, 0.002, 0.004, math.Inf(1)}
	before := acceptedHistogram{bounds: bounds, counts: []uint64{1000, 1000, 1000, 1000}} // an earlier phase, all fast
	after := acceptedHistogram{bounds: bounds, counts: []uint64{1000, 1090, 1099, 1100}}  // then 90 ≤2ms, 9 ≤4ms, 1 slower
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.50, 2 * time.Millisecond},
		{0.95, 4 * time.Millisecond},
		{0.999, time.Duration(math.MaxInt64)},
	} {
		if got := after.quantile(before, tc.q); got != tc.want {
			t.Errorf("quantile %v: %s, want %s", tc.q, got, tc.want)
		}
	}
	if got := before.quantile(before, 0.5); got != 0 {
		t.Errorf("nothing observed: %s, want 0", got)
	}
}
