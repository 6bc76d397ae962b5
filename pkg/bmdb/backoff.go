package bmdb

import (
	"math"
	"time"
)

// Backoff is a policy for how long a failed process leaves a machine alone.
// The first failure waits Initial; each further failure without a success in
// between waits the previous interval times Exponent, rounded up to a whole
// second and capped at Maximum. Exponent <= 1 means a constant Initial.
type Backoff struct {
	Initial  time.Duration
	Maximum  time.Duration
	Exponent float64
}

// Default backoff policies of the shepherd's processes.
var (
	AgentStartBackoff = Backoff{Initial: 5 * time.Minute, Maximum: 4 * time.Hour, Exponent: 1.2}
	RecoveryBackoff   = Backoff{Initial: time.Minute, Maximum: time.Hour, Exponent: 1.2}
)

// bounds returns Initial and Maximum in whole seconds, normalised: Initial is
// at least one second, Maximum at least Initial.
func (b Backoff) bounds() (initial, maximum int64) {
	initial = ceilSeconds(b.Initial)
	if initial < 1 {
		initial = 1
	}
	maximum = ceilSeconds(b.Maximum)
	if maximum < initial {
		maximum = initial
	}
	return initial, maximum
}

func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

// Next returns the interval in whole seconds after a failure, given the
// previous interval (0 when there was no earlier failure since a success).
func (b Backoff) Next(previous int64) int64 {
	initial, maximum := b.bounds()
	if previous <= 0 || b.Exponent <= 1 {
		return initial
	}
	// Round away float noise before rounding up, so that 10 × 1.1 is 11.
	next := int64(math.Ceil(math.Round(float64(previous)*b.Exponent*1e6) / 1e6))
	if next > maximum {
		next = maximum
	}
	if next < initial {
		next = initial
	}
	return next
}
