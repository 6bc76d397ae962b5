// Package faultproxy is a TCP proxy for tests that puts network faults between
// a client and a server: it passes bytes, stalls them (connections stay open,
// nothing moves: a partition or a frozen peer), or drops every connection and
// refuses new ones (a server that went away).
package faultproxy

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
)

// Proxy listens on 127.0.0.1 and forwards each connection to a target.
type Proxy struct {
	ln     net.Listener
	dial   func(ctx context.Context) (net.Conn, error)
	mu     sync.Mutex
	cond   *sync.Cond
	state  state
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

type state int

const (
	passing state = iota
	stalled
	down
)

// New starts a proxy to network/address ("unix", "/tmp/x/.s.PGSQL.5432").
func New(network, address string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	p := &Proxy{
		ln:    ln,
		dial:  func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, network, address) },
		conns: map[net.Conn]struct{}{},
	}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's listening port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Stall stops moving bytes in both directions; connections stay open and new
// ones are accepted but hang.
func (p *Proxy) Stall() { p.set(stalled) }

// Down closes every connection and refuses new ones.
func (p *Proxy) Down() {
	p.set(down)
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// Pass moves bytes again.
func (p *Proxy) Pass() { p.set(passing) }

func (p *Proxy) set(s state) {
	p.mu.Lock()
	p.state = s
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.state == down || p.closed {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.forget(client)
	if !p.await() {
		return
	}
	server, err := p.dial(context.Background())
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.forget(server)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(server, client) }()
	go func() { defer wg.Done(); p.pipe(client, server) }()
	wg.Wait()
}

// await blocks while stalled and says whether bytes may move.
func (p *Proxy) await() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.state == stalled && !p.closed {
		p.cond.Wait()
	}
	return p.state == passing && !p.closed
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == down || p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) forget(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// pipe copies src to dst, holding each chunk while the proxy is stalled, and
// closes both ends when either fails.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.await() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// ForPostgres starts a proxy in front of the PostgreSQL server that dbURL
// reaches over a Unix socket (host=/dir in the URL, port 5432) and returns
// the URL of the same database through the proxy.
func ForPostgres(dbURL string) (*Proxy, string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return nil, "", err
	}
	dir := u.Query().Get("host")
	if !strings.HasPrefix(dir, "/") {
		return nil, "", fmt.Errorf("faultproxy: %s does not name a Unix socket directory", dbURL)
	}
	p, err := New("unix", filepath.Join(dir, ".s.PGSQL.5432"))
	if err != nil {
		return nil, "", err
	}
	return p, fmt.Sprintf("postgres://%s@%s%s?sslmode=disable&connect_timeout=3", u.User.Username(), p.Addr(), u.Path), nil
}
