package equinix

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/time/rate"
)

// transport is the API hygiene every call goes through: a client-side rate
// limit shared by all calls of a provider, and retries with backoff on 429
// and 5xx that honour Retry-After.
type transport struct {
	base    http.RoundTripper
	limiter *rate.Limiter
	retries int
	backoff time.Duration
	maxWait time.Duration
}

// attemptsHeader carries how many attempts a call took from the transport
// to the error message, through the response packngo hands back.
const attemptsHeader = "X-Bmctl-Attempts"

// bound gives packngo, which builds its requests without a context, a
// round tripper that carries ctx.
func (t *transport) bound(ctx context.Context) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) { return t.roundTrip(ctx, req) })
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (t *transport) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	wait := t.backoff
	for attempt := 1; ; attempt++ {
		if err := t.waitTurn(ctx); err != nil {
			return nil, err
		}
		r := req.Clone(ctx)
		if attempt > 1 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r.Body = body
		}
		resp, err := t.base.RoundTrip(r)
		if err != nil {
			return nil, err
		}
		resp.Header.Set(attemptsHeader, strconv.Itoa(attempt))
		if attempt > t.retries || !retryable(req.Method, resp.StatusCode) {
			return keepErrorBody(resp), nil
		}
		d := wait
		if ra, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			d = ra
		}
		// A wait the API asks for that we will not make ends the call here,
		// with the answer that says why.
		if d > t.maxWait {
			return keepErrorBody(resp), nil
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return keepErrorBody(resp), nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		timer := time.NewTimer(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
		wait = min(2*wait, t.maxWait)
	}
}

// waitTurn waits for the rate limiter. Unlike rate.Limiter.Wait it fails
// only when ctx does, with ctx's error, not early for a deadline it predicts.
func (t *transport) waitTurn(ctx context.Context) error {
	r := t.limiter.Reserve()
	d := r.Delay()
	if d == 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// retryable: a 429 was not processed, so any call may be repeated; a 5xx
// may have been, so only calls that are safe to repeat are (a POST that
// created a device and then failed must not create a second one).
func retryable(method string, status int) bool {
	if status == http.StatusTooManyRequests {
		return true
	}
	if status < 500 {
		return false
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete:
		return true
	}
	return status == http.StatusServiceUnavailable // refused, not processed
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}

// keptBody is an error answer's body, kept for the error message after
// packngo has read it (packngo keeps only Metal's own error JSON and says
// "Unexpected Content-Type" of anything else, problem+json included).
type keptBody struct {
	*bytes.Reader
	data []byte
}

func (keptBody) Close() error { return nil }

// errorBodyLimit caps how much of an error answer is kept.
const errorBodyLimit = 64 << 10

func keepErrorBody(resp *http.Response) *http.Response {
	if resp.StatusCode < 400 {
		return resp
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	resp.Body.Close()
	resp.Body = &keptBody{Reader: bytes.NewReader(data), data: data}
	return resp
}

func keptBodyOf(resp *http.Response) []byte {
	if kb, ok := resp.Body.(*keptBody); ok {
		return kb.data
	}
	return nil
}
