package heartbeat

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client sends one agent's heartbeats to the endpoint over mutual TLS.
type Client struct {
	url  string
	http *http.Client
}

// StatusError is the endpoint's refusal of a heartbeat.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("endpoint refused the heartbeat: %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// ClientCertificate is the self-signed certificate an agent presents: the
// server reads only its ed25519 public key.
func ClientCertificate(key ed25519.PrivateKey, machineID string) (tls.Certificate, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "bmctl agent " + machineID},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// NewClient makes a client for the endpoint at base URL endpoint
// (https://host:port), trusting only the CA certificates in caPEM and
// authenticating with key. A nil key sends no client certificate (tests of
// the refusal use it).
func NewClient(endpoint string, caPEM []byte, key ed25519.PrivateKey, machineID string) (*Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("heartbeat endpoint %q is not an https://host:port URL", endpoint)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("endpoint CA holds no PEM certificate; the shepherd must pass the CA the endpoint's certificate chains to")
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
	if key != nil {
		cert, err := ClientCertificate(key, machineID)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	tr := &http.Transport{
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 1,
		// Kept across heartbeats, so a steady agent costs the server no
		// handshakes; the server closes it first when idle for long.
		IdleConnTimeout: 10 * time.Minute,
	}
	return &Client{
		url:  strings.TrimRight(endpoint, "/") + Path,
		http: &http.Client{Transport: tr, Timeout: 30 * time.Second},
	}, nil
}

// Send posts one heartbeat and returns the endpoint's answer, or a
// *StatusError when it refused.
func (c *Client) Send(ctx context.Context, req Request) (Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	return c.SendRaw(ctx, body)
}

// SendRaw posts body as it is: for tests and benches of the refusals.
func (c *Client) SendRaw(ctx context.Context, body []byte) (Response, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return Response{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hreq)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return Response{}, fmt.Errorf("reading endpoint answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb ErrorBody
		_ = json.Unmarshal(data, &eb)
		if eb.Error == "" {
			eb.Error = strings.TrimSpace(string(data))
		}
		return Response{}, &StatusError{Code: resp.StatusCode, Message: eb.Error}
	}
	var r Response
	if err := json.Unmarshal(data, &r); err != nil {
		return Response{}, fmt.Errorf("endpoint answer is not a heartbeat response: %w", err)
	}
	return r, nil
}

// Close drops the client's idle connection.
func (c *Client) Close() { c.http.CloseIdleConnections() }
