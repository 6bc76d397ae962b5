package equinix

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
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
	// ErrInconsistent means an answer cannot be true: paging metadata that
	// contradicts itself or the items, a read answered with another
	// device, a create answered with a device that existed before.
	ErrInconsistent = errors.New("inconsistent answer")
)

// APIError is a failed Metal API call, said so that an operator knows what
// bmctl was doing, to which device or project, and what Metal answered.
type APIError struct {
	Op       string // what bmctl was doing: "reboot device 3f…"
	Call     string // the API call: "POST /devices/3f…/actions"
	Status   int    // HTTP status; 0 when no answer came
	Messages []string
	Detail   string // when no answer came: why, if better said than err
	Attempts int    // how many times the call was made
	Hint     string // what to do about it, if we know
	err      error  // what errors.Is matches: a sentinel or the transport's error
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "equinix: %s: %s: ", e.Op, e.Call)
	switch {
	case e.Status != 0:
		fmt.Fprintf(&b, "%d %s", e.Status, http.StatusText(e.Status))
		if len(e.Messages) > 0 {
			b.WriteString(": " + strings.Join(e.Messages, "; "))
		}
	case e.Detail != "":
		b.WriteString(e.Detail)
	default:
		b.WriteString(e.err.Error())
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
	device  bool // a 404 from Metal means the device is gone (shepherd.ErrNotFound)
}

// inconsistent is the error of an answer to c that cannot be true.
func inconsistent(c call, what string) error {
	return fmt.Errorf("equinix: %s: %s: %w: %s", c.op, c.api, ErrInconsistent, what)
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
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			e.Detail = "the answer is not JSON (" + err.Error() + ")"
			e.Hint = p.urlHint()
		case errors.As(err, &te) && te.Field == "":
			e.Detail = "the answer is a JSON " + te.Value + ", not the object the API answers"
			e.Hint = p.urlHint()
		}
		return e
	}
	resp := er.Response
	e.Status = resp.StatusCode
	e.Attempts, _ = strconv.Atoi(resp.Header.Get(attemptsHeader))
	fromMetal := p.messages(e, er)
	if e.Status == http.StatusNotFound && !(fromMetal && c.device) {
		// Name the whole URL: a wrong base URL is a likely cause.
		method, path, _ := strings.Cut(c.api, " ")
		e.Call = method + " " + p.apiURL + strings.TrimPrefix(path, "/")
	}
	switch {
	case !fromMetal && e.Status == http.StatusNotFound:
		e.Hint = "the answer is not the Metal API's (" + mediaType(resp) + "); " + p.urlHint()
	case e.Status == http.StatusUnauthorized:
		e.err, e.Hint = ErrUnauthorized, "check "+EnvToken
	case e.Status == http.StatusForbidden:
		e.err, e.Hint = ErrUnauthorized, "the token has no access to project "+p.cfg.ProjectID
	case e.Status == http.StatusNotFound && c.device:
		e.err = shepherd.ErrNotFound
	case e.Status == http.StatusNotFound:
		e.Hint = "Metal has no such project, or the token may not see it: check the project id (--equinix-project)"
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

func (p *Provider) urlHint() string {
	return "check the API URL " + p.apiURL + " (--equinix-api-url)"
}

func mediaType(resp *http.Response) string {
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		return "no Content-Type"
	}
	return mt
}

// messages fills e.Messages from an error answer's body: Metal's error
// JSON ("errors" or "error"), or problem+json's title, detail and errors as
// gateways and mocks answer, or the start of any other body. It reports
// whether the answer was Metal's error JSON.
func (p *Provider) messages(e *APIError, er *packngo.ErrorResponse) bool {
	body := keptBodyOf(er.Response)
	switch mediaType(er.Response) {
	case "application/json":
		var m struct {
			Errors []string `json:"errors"`
			Error  string   `json:"error"`
		}
		if json.Unmarshal(body, &m) == nil && (len(m.Errors) > 0 || m.Error != "") {
			e.Messages = slices.DeleteFunc(append(m.Errors, m.Error), func(s string) bool { return s == "" })
			return true
		}
	case "application/problem+json":
		var m struct {
			Title  string `json:"title"`
			Detail string `json:"detail"`
			Errors []any  `json:"errors"`
		}
		if json.Unmarshal(body, &m) == nil {
			if m.Title != "" && m.Title != http.StatusText(e.Status) {
				e.Messages = append(e.Messages, m.Title)
			}
			if m.Detail != "" {
				e.Messages = append(e.Messages, m.Detail)
			}
			for _, x := range m.Errors {
				if s, ok := x.(string); ok {
					e.Messages = append(e.Messages, s)
				} else if b, err := json.Marshal(x); err == nil {
					e.Messages = append(e.Messages, string(b))
				}
			}
			return false
		}
	}
	if s := strings.Join(strings.Fields(string(body)), " "); s != "" {
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		e.Messages = append(e.Messages, s)
	}
	return false
}
