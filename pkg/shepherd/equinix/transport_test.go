package equinix

import (
	"net/http"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{"Wed, 25 Nov 2026 10:00:30 GMT", 30 * time.Second, true},
		{"Wed, 25 Nov 2026 09:59:00 GMT", 0, true}, // in the past: now
		{"soon", 0, false},
		{"-3", 0, false},
	} {
		got, ok := retryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestRetryable(t *testing.T) {
	for _, c := range []struct {
		method string
		status int
		want   bool
	}{
		{http.MethodGet, 429, true},
		{http.MethodPost, 429, true}, // refused, not processed
		{http.MethodGet, 500, true},
		{http.MethodPost, 500, false}, // may have created a device
		{http.MethodPost, 503, true},
		{http.MethodGet, 404, false},
		{http.MethodPut, 502, true},
	} {
		if got := retryable(c.method, c.status); got != c.want {
			t.Errorf("retryable(%s, %d) = %v, want %v", c.method, c.status, got, c.want)
		}
	}
}
