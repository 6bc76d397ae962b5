package equinix

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/packethost/packngo"

	"github.com/bmctl/bmctl/pkg/shepherd"
)

var (
	// ErrUnauthorized means Metal refused the token (401) or the token has
	// no access to what was asked (403).
	ErrUnauthorized = errors.New("Metal API refused the credentials")
	// ErrNoCapacity means the project has no free hardware reservation.
	ErrNoCapacity = errors.New("no free hardware reservation")
)

// APIError is a failed Metal API call, said so that an operator knows what
// bmctl was doing, to which device or project, and what Metal answered.
type APIError struct {
	Op       string // what bmctl was doing: "reboot device 3f…"
	Call     string // the API call: "POST /devices/3f…/actions"
	Status   int    // HTTP status; 0 when no answer came
	Messages []string
	Attempts int    // how many times the call was made
	Hint     string // what to do about it, if we know
	err      error  // what errors.Is matches: a sentinel or the transport's error
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "equinix: %s: %s: ", e.Op, e.Call)
	if e.Status == 0 {
		b.WriteString(e.err.Error())
	} else {
		fmt.Fprintf(&b, "%d %s", e.Status, http.StatusText(e.Status))
		if len(e.Messages) > 0 {
			b.WriteString(": " + strings.Join(e.Messages, "; "))
		}
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	if e.Hint != "" {
		b.WriteString("; " + e.Hint)
	}
	return b.String()
}

func (e *APIError) Unwrap() error { return e.err }

// call names one API call for its errors.
type call struct {
	op, api string
	device  bool // a 404 means the device is gone (shepherd.ErrNotFound)
}

// wrap turns what packngo returned into an APIError, or nil.
func (p *Provider) wrap(c call, err error) error {
	if err == nil {
		return nil
	}
	e := &APIError{Op: c.op, Call: c.api, err: err}
	var er *packngo.ErrorResponse
	if !errors.As(err, &er) || er.Response == nil {
		// The call is named already; of net/http's "Get <url>: ..." keep the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			e.err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			e.Hint = fmt.Sprintf("no answer within %v", p.cfg.CallTimeout)
		}
		return e
	}
	resp := er.Response
	e.Status = resp.StatusCode
	e.Messages = append(e.Messages, er.Errors...)
	if er.SingleError != "" {
		e.Messages = append(e.Messages, er.SingleError)
	}
	e.Attempts, _ = strconv.Atoi(resp.Header.Get(attemptsHeader))
	switch {
	case e.Status == http.StatusUnauthorized:
		e.err, e.Hint = ErrUnauthorized, "check "+EnvToken
	case e.Status == http.StatusForbidden:
		e.err, e.Hint = ErrUnauthorized, "the token has no access to project "+p.cfg.ProjectID
	case e.Status == http.StatusNotFound && c.device:
		e.err = shepherd.ErrNotFound
	case e.Status == http.StatusNotFound:
		e.Hint = "check the project id (--equinix-project) and that the token may see it"
	case e.Status == http.StatusTooManyRequests:
		e.Hint = "the API is rate limiting bmctl"
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			if _, err := strconv.Atoi(ra); err == nil {
				ra += "s"
			}
			e.Hint += " and asks to retry after " + ra
		}
	}
	return e
}
