// Package redfish is a Redfish client for power control, over net/http: the
// service root, the Systems collection, a system's PowerState and its
// ComputerSystem.Reset action with the reset types it allows (from
// ResetType@Redfish.AllowableValues or the @Redfish.ActionInfo resource).
//
// A Client is one BMC. It holds a session (SessionService, X-Auth-Token)
// across calls, logs in again when the BMC answers 401, deletes it on Close,
// and falls back to basic auth where the service has no sessions or refuses
// a new one. It sends one request at a time, each with its own timeout, and
// waits out 429 and 503 answers as their Retry-After says.
package redfish

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bmctl/bmctl/pkg/bmc"
)

// Config is one BMC.
type Config struct {
	// Address is the BMC's base URL, https://host[:port].
	Address  string
	Username string
	Password string
	// System is the path of the system to control; may be empty when the
	// BMC has exactly one.
	System string
	// RootCAs verify the BMC's certificate; nil uses the host's roots.
	RootCAs *x509.CertPool
	// Insecure turns certificate verification off (logged as a warning).
	Insecure bool
	// RequestTimeout bounds each request. Default 20s.
	RequestTimeout time.Duration
	// MaxRetryWait caps one wait for a 429 or 503 answer's Retry-After.
	// Default 60s.
	MaxRetryWait time.Duration
	// Retries is how many times a 429 or 503 answer is retried. Default 5.
	Retries int
	Logger  *slog.Logger
}

// Client talks to one BMC. It is safe for concurrent use; calls are
// serialised, so the BMC never sees two of its requests at once.
type Client struct {
	cfg  Config
	base *url.URL
	http *http.Client
	log  *slog.Logger
	// sem is held by the call in progress, and guards everything below.
	sem chan struct{}

	token      string
	sessionURI string
	basic      bool
	root       *serviceRoot
	system     string
	actionInfo map[string][]bmc.ResetType
}

var _ bmc.Controller = (*Client)(nil)

// New checks cfg and returns a client; it does not contact the BMC.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(cfg.Address, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("redfish address %q is not a URL; want https://host[:port]", cfg.Address)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("redfish address %q: want https:// (Redfish credentials never travel in clear text)", cfg.Address)
	}
	if u.User != nil {
		return nil, fmt.Errorf("redfish address of %s carries credentials; give username and password_env or password_file instead", u.Host)
	}
	if cfg.Username == "" {
		return nil, fmt.Errorf("redfish BMC %s: no username", cfg.Address)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 20 * time.Second
	}
	if cfg.MaxRetryWait <= 0 {
		cfg.MaxRetryWait = 60 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("bmc", cfg.Address)
	if cfg.Insecure {
		log.Warn("TLS certificate verification is off for this BMC (insecure: true); give ca_file to verify it")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, InsecureSkipVerify: cfg.Insecure, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 1
	return &Client{
		cfg:        cfg,
		base:       u,
		http:       &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		log:        log,
		sem:        make(chan struct{}, 1),
		system:     cfg.System,
		actionInfo: map[string][]bmc.ResetType{},
	}, nil
}

func (c *Client) Kind() string    { return "redfish" }
func (c *Client) Address() string { return c.cfg.Address }

// lock takes the client for one call, or fails when ctx ends first.
func (c *Client) lock(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for another operation on BMC %s: %w", c.cfg.Address, ctx.Err())
	}
}

func (c *Client) unlock() { <-c.sem }

type link struct {
	ID string `json:"@odata.id"`
}

type serviceRoot struct {
	RedfishVersion string `json:"RedfishVersion"`
	Systems        link   `json:"Systems"`
	SessionService link   `json:"SessionService"`
	Links          struct {
		Sessions link `json:"Sessions"`
	} `json:"Links"`
}

type collection struct {
	Members []link `json:"Members"`
}

type resetAction struct {
	Target     string          `json:"target"`
	Allowable  []bmc.ResetType `json:"ResetType@Redfish.AllowableValues"`
	ActionInfo string          `json:"@Redfish.ActionInfo"`
}

type system struct {
	ID         string         `json:"@odata.id"`
	PowerState bmc.PowerState `json:"PowerState"`
	Actions    struct {
		Reset *resetAction `json:"#ComputerSystem.Reset"`
	} `json:"Actions"`
}

type actionInfo struct {
	Parameters []struct {
		Name            string          `json:"Name"`
		AllowableValues []bmc.ResetType `json:"AllowableValues"`
	} `json:"Parameters"`
}

// Status reads the system's power state and the reset types it allows.
func (c *Client) Status(ctx context.Context) (bmc.Status, error) { return c.status(ctx, "") }

// Reset posts the system's ComputerSystem.Reset action.
func (c *Client) Reset(ctx context.Context, t bmc.ResetType) error { return c.reset(ctx, "", t) }

// ForSystem is a controller of another system of the same BMC: it shares
// the client's session and its one-request-at-a-time. Closing it does
// nothing; close the client.
func (c *Client) ForSystem(path string) bmc.Controller { return &systemController{c: c, path: path} }

type systemController struct {
	c    *Client
	path string
}

func (s *systemController) Kind() string    { return s.c.Kind() }
func (s *systemController) Address() string { return s.c.Address() }
func (s *systemController) Status(ctx context.Context) (bmc.Status, error) {
	return s.c.status(ctx, s.path)
}
func (s *systemController) Reset(ctx context.Context, t bmc.ResetType) error {
	return s.c.reset(ctx, s.path, t)
}
func (s *systemController) Close(context.Context) error { return nil }

// status reads system path ("": the client's own).
func (c *Client) status(ctx context.Context, path string) (bmc.Status, error) {
	if err := c.lock(ctx); err != nil {
		return bmc.Status{}, err
	}
	defer c.unlock()
	sys, err := c.readSystem(ctx, path)
	if err != nil {
		return bmc.Status{}, err
	}
	st := bmc.Status{Power: sys.PowerState}
	if a := sys.Actions.Reset; a != nil {
		st.Resets, err = c.allowed(ctx, a)
		if err != nil {
			return st, err
		}
	}
	return st, nil
}

func (c *Client) reset(ctx context.Context, path string, t bmc.ResetType) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.unlock()
	sys, err := c.readSystem(ctx, path)
	if err != nil {
		return err
	}
	a := sys.Actions.Reset
	if a == nil || a.Target == "" {
		return fmt.Errorf("system %s has no ComputerSystem.Reset action", sys.ID)
	}
	allowed, err := c.allowed(ctx, a)
	if err != nil {
		return err
	}
	if len(allowed) > 0 && !(bmc.Status{Resets: allowed}).Allows(t) {
		return fmt.Errorf("%w: %s (system %s allows %v)", bmc.ErrNotAllowed, t, sys.ID, allowed)
	}
	return c.do(ctx, http.MethodPost, a.Target, map[string]any{"ResetType": t}, nil)
}

// Systems lists the paths of the BMC's systems.
func (c *Client) Systems(ctx context.Context) ([]string, error) {
	if err := c.lock(ctx); err != nil {
		return nil, err
	}
	defer c.unlock()
	return c.systems(ctx)
}

// System is the path of the system the client controls, once known.
func (c *Client) System() string {
	c.sem <- struct{}{}
	defer c.unlock()
	return c.system
}

// Close deletes the client's session at the BMC, if it has one.
func (c *Client) Close(ctx context.Context) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.unlock()
	if c.token == "" || c.sessionURI == "" {
		c.token = ""
		return nil
	}
	err := c.send(ctx, http.MethodDelete, c.sessionURI, nil, nil, true)
	c.token, c.sessionURI = "", ""
	var re *Error
	if errors.As(err, &re) && (re.Status == http.StatusNotFound || re.Status == http.StatusUnauthorized) {
		return nil // already gone
	}
	if err != nil {
		return fmt.Errorf("deleting session at %s: %w", c.cfg.Address, err)
	}
	return nil
}

func (c *Client) serviceRoot(ctx context.Context) (*serviceRoot, error) {
	if c.root != nil {
		return c.root, nil
	}
	var root serviceRoot
	// The service root answers without authentication (DSP0266); a BMC
	// that wants it anyway gets basic auth.
	err := c.send(ctx, http.MethodGet, "/redfish/v1/", nil, &root, false)
	if errors.Is(err, ErrCredentials) {
		c.basic = true
		err = c.send(ctx, http.MethodGet, "/redfish/v1/", nil, &root, true)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the service root: %w", err)
	}
	if root.Systems.ID == "" {
		return nil, fmt.Errorf("the service root of %s has no Systems collection", c.cfg.Address)
	}
	c.root = &root
	return c.root, nil
}

func (c *Client) systems(ctx context.Context) ([]string, error) {
	root, err := c.serviceRoot(ctx)
	if err != nil {
		return nil, err
	}
	var coll collection
	if err := c.do(ctx, http.MethodGet, root.Systems.ID, nil, &coll); err != nil {
		return nil, fmt.Errorf("reading the Systems collection: %w", err)
	}
	var out []string
	for _, m := range coll.Members {
		if m.ID != "" {
			out = append(out, m.ID)
		}
	}
	return out, nil
}

// readSystem reads system path, or the client's own system, found once.
func (c *Client) readSystem(ctx context.Context, path string) (*system, error) {
	if path == "" && c.system == "" {
		ids, err := c.systems(ctx)
		if err != nil {
			return nil, err
		}
		switch len(ids) {
		case 0:
			return nil, fmt.Errorf("BMC %s lists no systems", c.cfg.Address)
		case 1:
			c.system = ids[0]
		default:
			return nil, fmt.Errorf("BMC %s has %d systems (%s); name the machine's one with system: in the inventory", c.cfg.Address, len(ids), strings.Join(ids, ", "))
		}
	}
	if path == "" {
		path = c.system
	}
	var sys system
	if err := c.do(ctx, http.MethodGet, path, nil, &sys); err != nil {
		return nil, fmt.Errorf("reading system %s: %w", path, err)
	}
	if sys.ID == "" {
		sys.ID = path
	}
	return &sys, nil
}

// allowed is the reset types an action allows: its AllowableValues, else
// its ActionInfo's (read once), else none listed.
func (c *Client) allowed(ctx context.Context, a *resetAction) ([]bmc.ResetType, error) {
	if len(a.Allowable) > 0 || a.ActionInfo == "" {
		return a.Allowable, nil
	}
	if v, ok := c.actionInfo[a.ActionInfo]; ok {
		return v, nil
	}
	var info actionInfo
	if err := c.do(ctx, http.MethodGet, a.ActionInfo, nil, &info); err != nil {
		return nil, fmt.Errorf("reading the reset action's ActionInfo: %w", err)
	}
	var v []bmc.ResetType
	for _, p := range info.Parameters {
		if p.Name == "ResetType" {
			v = p.AllowableValues
		}
	}
	c.actionInfo[a.ActionInfo] = v
	return v, nil
}

// do sends an authenticated request: it logs in first if it has to, and
// once again if the BMC forgot the session.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	if c.token == "" && !c.basic {
		if err := c.login(ctx); err != nil {
			return err
		}
	}
	err := c.send(ctx, method, path, body, out, true)
	if errors.Is(err, ErrCredentials) && c.token != "" {
		// The session timed out or the BMC was reset: a new one.
		c.log.Debug("session refused; logging in again", "path", path)
		c.token, c.sessionURI = "", ""
		if lerr := c.login(ctx); lerr != nil {
			return lerr
		}
		err = c.send(ctx, method, path, body, out, true)
	}
	return err
}

type sessionRequest struct {
	UserName string `json:"UserName"`
	Password string `json:"Password"`
}

// login creates a session, or settles for basic auth where the service has
// no sessions or refuses a new one (a BMC at its session limit).
func (c *Client) login(ctx context.Context) error {
	root, err := c.serviceRoot(ctx)
	if err != nil {
		return err
	}
	sessions := root.Links.Sessions.ID
	if sessions == "" && root.SessionService.ID != "" {
		var svc struct {
			Sessions link `json:"Sessions"`
		}
		if err := c.send(ctx, http.MethodGet, root.SessionService.ID, nil, &svc, false); err == nil {
			sessions = svc.Sessions.ID
		}
	}
	if sessions == "" {
		c.basic = true
		return nil
	}
	resp, err := c.exchange(ctx, http.MethodPost, sessions, sessionRequest{UserName: c.cfg.Username, Password: c.cfg.Password}, false, false)
	if err != nil {
		return fmt.Errorf("creating a session: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("creating a session as %s: %w", c.cfg.Username, withCredentials(parseError(http.MethodPost, sessions, resp.StatusCode, data)))
	case resp.StatusCode >= 300:
		c.log.Info("BMC refused a session; using basic auth", "cause", parseError(http.MethodPost, sessions, resp.StatusCode, data).Error())
		c.basic = true
		return nil
	}
	token := resp.Header.Get("X-Auth-Token")
	if token == "" {
		c.basic = true
		return nil
	}
	c.token = token
	c.sessionURI = resp.Header.Get("Location")
	if c.sessionURI == "" {
		var s link
		_ = json.Unmarshal(data, &s)
		c.sessionURI = s.ID
	}
	if u, err := url.Parse(c.sessionURI); err == nil && u.IsAbs() {
		c.sessionURI = u.RequestURI()
	}
	return nil
}

// credentialsError is a 401 or 403 at login, which is always the
// credentials.
type credentialsError struct{ e *Error }

func (e credentialsError) Error() string   { return e.e.Error() }
func (e credentialsError) Unwrap() []error { return []error{e.e, ErrCredentials} }

func withCredentials(e *Error) error { return credentialsError{e} }

// send sends one request with authentication (auth) and decodes a 2xx
// answer into out. 429 and 503 are retried as the answer's Retry-After says.
func (c *Client) send(ctx context.Context, method, path string, body, out any, auth bool) error {
	resp, err := c.exchange(ctx, method, path, body, auth, true)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return parseError(method, path, resp.StatusCode, data)
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: the answer is not the JSON expected: %v", method, path, err)
		}
	}
	return nil
}

// exchange sends one request and returns the response of the last attempt;
// with retryBusy, 429 and 503 answers are waited out and sent again.
func (c *Client) exchange(ctx context.Context, method, path string, body any, auth, retryBusy bool) (*http.Response, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	target, err := c.base.Parse(path)
	if err != nil || target.Host != c.base.Host {
		return nil, fmt.Errorf("BMC %s links to %q, which is not on it", c.cfg.Address, path)
	}
	for attempt := 0; ; attempt++ {
		resp, err := c.attempt(ctx, method, target.String(), payload, auth)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		busy := resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable
		if !busy || !retryBusy || attempt >= c.cfg.Retries {
			return resp, nil
		}
		wait := retryAfter(resp.Header.Get("Retry-After"), attempt)
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if wait > c.cfg.MaxRetryWait {
			wait = c.cfg.MaxRetryWait
		}
		c.log.Debug("BMC busy; retrying", "status", resp.StatusCode, "path", path, "after", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%s %s: BMC busy (%d), retry after %s: %w", method, path, resp.StatusCode, wait, ctx.Err())
		case <-t.C:
		}
	}
}

func (c *Client) attempt(ctx context.Context, method, target string, payload []byte, auth bool) (*http.Response, error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(rctx, method, target, rd)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("OData-Version", "4.0")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		if c.token != "" {
			req.Header.Set("X-Auth-Token", c.token)
		} else {
			req.SetBasicAuth(c.cfg.Username, c.cfg.Password)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		timedOut := rctx.Err() != nil && ctx.Err() == nil
		cancel()
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the caller's message already
		}
		if timedOut {
			return nil, fmt.Errorf("no answer within %s: %w", c.cfg.RequestTimeout, context.DeadlineExceeded)
		}
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// retryAfter reads a Retry-After header (seconds or an HTTP date); without
// one the wait doubles from one second.
func retryAfter(h string, attempt int) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0)
	}
	return time.Second << min(attempt, 5)
}
