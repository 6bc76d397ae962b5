// Package redfishsim is a simulated Redfish BMC for tests and the demo: a
// real HTTPS server on 127.0.0.1 serving resources shaped like the DMTF's
// public-rackmount1 mockup (service root, SessionService, Systems, a
// ComputerSystem.Reset action), with sessions (X-Auth-Token) and basic auth,
// and a power state that changes after a delay and powers the system's
// simulated machine (an sshsim.Machine: its SSH server goes down and comes
// up). Faults make it behave like the BMCs that go wrong in the field.
package redfishsim

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Machine is what a system powers: sshsim.Machine satisfies it.
type Machine interface {
	PowerOff()
	PowerOn() error
}

// AllResetTypes are the reset types a system allows unless a fault says
// otherwise (the mockup's list plus PowerCycle).
var AllResetTypes = []string{"On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "ForceOn", "PushPowerButton", "PowerCycle"}

// Delays are how long the simulated hardware takes.
type Delays struct {
	// Off is from a ForceOff, PowerCycle or ForceRestart to power Off.
	Off time.Duration
	// Cycle is how long a PowerCycle or ForceRestart keeps power Off.
	Cycle time.Duration
	// On is from an On request to power On.
	On time.Duration
	// Boot is from power On to the machine's SSH server listening.
	Boot time.Duration
}

// Faults make the BMC misbehave; the zero value is a healthy BMC.
type Faults struct {
	// ResetTypes, if set, are the only reset types allowed.
	ResetTypes []string
	// ActionInfoOnly lists the allowed types only in a @Redfish.ActionInfo
	// resource, not as ResetType@Redfish.AllowableValues.
	ActionInfoOnly bool
	// NoSessions: the service has no SessionService; basic auth only.
	NoSessions bool
	// SessionLimit: creating a session answers 503, as a BMC whose session
	// table is full (iDRAC's RAC0218).
	SessionLimit bool
	// ResetError answers every reset with a Redfish error object.
	ResetError bool
	// RateLimit answers this many of the next requests 429 with
	// Retry-After: 1.
	RateLimit int
	// Unavailable answers this many of the next requests 503 with
	// Retry-After: 1, as a BMC busy with itself.
	Unavailable int
	// NeverComesBack: after a reset, power stays Off whatever is asked.
	NeverComesBack bool
	// QuietRestart: a ForceRestart keeps PowerState On throughout; only the
	// machine's SSH server going away shows it.
	QuietRestart bool
	// Hang: requests get no answer until the client gives up.
	Hang bool
}

// Config is one simulated BMC.
type Config struct {
	Username, Password string
	// Certificate is the server's TLS certificate (required).
	Certificate tls.Certificate
	// Machines are the BMC's systems' machines, one system each, with ids
	// "1", "2", ...; an entry may be nil (power state only). None: one
	// system without a machine.
	Machines []Machine
	Delays   Delays
	Faults   Faults
	// MaxSessions is the size of the session table. Default 4.
	MaxSessions int
	Logger      *slog.Logger
}

// Request is one request the BMC received, for tests.
type Request struct {
	Method, Path string
	// Auth is "token", "basic", "bad" or "" (none).
	Auth string
	// Status is what the BMC answered.
	Status int
	// At is when the request arrived.
	At time.Time
}

// BMC is a running simulated BMC.
type BMC struct {
	cfg    Config
	url    string
	server *http.Server
	log    *slog.Logger

	mu       sync.Mutex
	faults   Faults
	systems  []*system
	sessions map[string]string // token -> session id
	nextSess int
	requests []Request
	resets   []string
	closed   bool
	inFlight int
	peak     int // most requests in flight at once
}

type system struct {
	id      string
	machine Machine
	power   string
	gen     int // bumped by every reset; stale transitions are dropped
	timers  []*time.Timer
	// wantOn is the machine's power to be; powering serialises applying it.
	wantOn   bool
	powering sync.Mutex
}

// New starts a BMC on 127.0.0.1 at a free port.
func New(cfg Config) (*BMC, error) {
	if len(cfg.Certificate.Certificate) == 0 {
		return nil, fmt.Errorf("redfishsim: a TLS certificate is required")
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b := &BMC{cfg: cfg, faults: cfg.Faults, sessions: map[string]string{}, log: cfg.Logger}
	machines := cfg.Machines
	if len(machines) == 0 {
		machines = []Machine{nil}
	}
	for i, m := range machines {
		b.systems = append(b.systems, &system{id: fmt.Sprint(i + 1), machine: m, power: "On"})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("redfishsim: listening: %w", err)
	}
	b.url = "https://" + ln.Addr().String()
	b.server = &http.Server{
		Handler:           b.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cfg.Certificate}},
		ErrorLog:          slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	}
	go func() { _ = b.server.ServeTLS(ln, "", "") }()
	return b, nil
}

// URL is the BMC's base URL, https://127.0.0.1:port.
func (b *BMC) URL() string { return b.url }

// SystemPath is the Redfish path of system i (from 0).
func (b *BMC) SystemPath(i int) string { return "/redfish/v1/Systems/" + b.systems[i].id }

// Close stops the server and every pending power transition.
func (b *BMC) Close() error {
	b.mu.Lock()
	b.closed = true
	for _, s := range b.systems {
		s.stop()
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := b.server.Shutdown(ctx)
	if err != nil {
		err = b.server.Close()
	}
	return err
}

// SetFaults replaces the faults from now on.
func (b *BMC) SetFaults(f Faults) {
	b.mu.Lock()
	b.faults = f
	b.mu.Unlock()
}

// Faults are the faults in force.
func (b *BMC) Faults() Faults {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.faults
}

// PowerState is system i's power state.
func (b *BMC) PowerState(i int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.systems[i].power
}

// SetPowerState sets system i's power at once, powering its machine to
// match.
func (b *BMC) SetPowerState(i int, state string) error {
	b.mu.Lock()
	s := b.systems[i]
	s.stop()
	s.power = state
	m := s.machine
	s.wantOn = state != "Off"
	b.mu.Unlock()
	if m == nil {
		return nil
	}
	s.powering.Lock()
	defer s.powering.Unlock()
	if state == "Off" {
		m.PowerOff()
		return nil
	}
	return m.PowerOn()
}

// Sessions is how many sessions are open.
func (b *BMC) Sessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// ExpireSessions forgets every session, as a BMC whose session timed out
// or which restarted: their tokens are answered 401 from now on.
func (b *BMC) ExpireSessions() {
	b.mu.Lock()
	b.sessions = map[string]string{}
	b.mu.Unlock()
}

// Requests returns the requests received so far.
func (b *BMC) Requests() []Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Request(nil), b.requests...)
}

// PeakConcurrency is the most requests the BMC was answering at once.
func (b *BMC) PeakConcurrency() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak
}

// Resets returns the reset types performed so far, in order.
func (b *BMC) Resets() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.resets...)
}

func (s *system) stop() {
	s.gen++
	for _, t := range s.timers {
		t.Stop()
	}
	s.timers = nil
}

// after runs f with b.mu held after d, unless the system was reset again
// meanwhile.
func (b *BMC) after(s *system, d time.Duration, f func()) {
	gen := s.gen
	s.timers = append(s.timers, time.AfterFunc(d, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if s.gen != gen || b.closed {
			return
		}
		f()
	}))
}

// machineOff and machineOn power the machine to match the power state,
// outside b.mu (sshsim waits for its connections to close); each powering
// applies the latest wish, so they converge whatever order they run in.
func (b *BMC) machineOff(s *system) { b.setMachine(s, false) }
func (b *BMC) machineOn(s *system)  { b.setMachine(s, true) }

func (b *BMC) setMachine(s *system, on bool) {
	m := s.machine
	if m == nil {
		return
	}
	s.wantOn = on
	go func() {
		s.powering.Lock()
		defer s.powering.Unlock()
		b.mu.Lock()
		want := s.wantOn
		b.mu.Unlock()
		if !want {
			m.PowerOff()
		} else if err := m.PowerOn(); err != nil {
			b.log.Warn("redfishsim: powering the machine on failed", "system", s.id, "err", err)
		}
	}()
}

// reset starts a reset of s; b.mu is held.
func (b *BMC) reset(s *system, t string) {
	s.stop()
	b.resets = append(b.resets, t)
	d := b.cfg.Delays
	never := b.faults.NeverComesBack
	powerOn := func(after time.Duration) {
		if never {
			return
		}
		b.after(s, after, func() {
			s.power = "On"
			b.after(s, d.Boot, func() { b.machineOn(s) })
		})
	}
	off := func() {
		s.power = "Off"
		b.machineOff(s)
	}
	switch t {
	case "ForceOff", "GracefulShutdown":
		b.after(s, d.Off, off)
	case "On", "ForceOn":
		if s.power != "On" {
			powerOn(d.On)
		}
	case "PowerCycle", "PushPowerButton":
		if s.power != "On" {
			powerOn(d.On)
			return
		}
		b.after(s, d.Off, func() {
			off()
			powerOn(d.Cycle)
		})
	case "ForceRestart", "GracefulRestart":
		if s.power != "On" {
			powerOn(d.On)
			return
		}
		if b.faults.QuietRestart {
			b.after(s, d.Off, func() {
				b.machineOff(s)
				if !never {
					b.after(s, d.Cycle+d.Boot, func() { b.machineOn(s) })
				}
			})
			return
		}
		b.after(s, d.Off, func() {
			off()
			powerOn(d.Cycle)
		})
	}
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errorBody is a Redfish error object.
func errorBody(code, message string, info ...map[string]any) map[string]any {
	if info == nil {
		info = []map[string]any{}
	}
	return map[string]any{"error": map[string]any{"code": code, "message": message, "@Message.ExtendedInfo": info}}
}

func messageInfo(id, message, severity, resolution string) map[string]any {
	return map[string]any{
		"@odata.type": "#Message.v1_1_1.Message", "MessageId": id, "Message": message,
		"Severity": severity, "MessageSeverity": severity, "Resolution": resolution,
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(s int) {
	w.status = s
	w.ResponseWriter.WriteHeader(s)
}

func (b *BMC) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /redfish", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"v1": "/redfish/v1/"})
	})
	mux.HandleFunc("GET /redfish/v1/{$}", b.serviceRoot)
	mux.HandleFunc("GET /redfish/v1", b.serviceRoot)
	mux.HandleFunc("POST /redfish/v1/SessionService/Sessions", b.createSession)
	mux.HandleFunc("GET /redfish/v1/SessionService", b.authed(b.sessionService))
	mux.HandleFunc("GET /redfish/v1/SessionService/Sessions", b.authed(b.sessionCollection))
	mux.HandleFunc("DELETE /redfish/v1/SessionService/Sessions/{id}", b.authed(b.deleteSession))
	mux.HandleFunc("GET /redfish/v1/Systems", b.authed(b.systemCollection))
	mux.HandleFunc("GET /redfish/v1/Systems/{id}", b.authed(b.systemResource))
	mux.HandleFunc("GET /redfish/v1/Systems/{id}/ResetActionInfo", b.authed(b.resetActionInfo))
	mux.HandleFunc("POST /redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset", b.authed(b.resetAction))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: 200}
		at := time.Now()
		b.mu.Lock()
		b.inFlight++
		b.peak = max(b.peak, b.inFlight)
		b.mu.Unlock()
		defer func() {
			auth := b.authKind(r)
			b.mu.Lock()
			b.inFlight--
			b.requests = append(b.requests, Request{Method: r.Method, Path: r.URL.Path, Auth: auth, Status: sw.status, At: at})
			b.mu.Unlock()
		}()
		b.mu.Lock()
		f := b.faults
		limited := f.RateLimit > 0
		if limited {
			b.faults.RateLimit--
		}
		unavailable := !limited && f.Unavailable > 0
		if unavailable {
			b.faults.Unavailable--
		}
		b.mu.Unlock()
		if f.Hang {
			<-r.Context().Done()
			return
		}
		if limited {
			sw.Header().Set("Retry-After", "1")
			writeJSON(sw, http.StatusTooManyRequests, errorBody("Base.1.8.GeneralError", "Too many requests; retry later.",
				messageInfo("Base.1.8.ServiceTemporarilyUnavailable", "The service is temporarily unavailable. Retry in 1 seconds.", "Critical", "Wait the indicated time and retry the operation.")))
			return
		}
		if unavailable {
			sw.Header().Set("Retry-After", "1")
			writeJSON(sw, http.StatusServiceUnavailable, errorBody("Base.1.8.ServiceTemporarilyUnavailable", "The service is temporarily unavailable. Retry in 1 seconds."))
			return
		}
		mux.ServeHTTP(sw, r)
	})
}

// authKind classifies a request's credentials without keeping them.
func (b *BMC) authKind(r *http.Request) string {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		b.mu.Lock()
		_, ok := b.sessions[tok]
		b.mu.Unlock()
		if ok {
			return "token"
		}
		return "bad"
	}
	if _, _, ok := r.BasicAuth(); ok {
		if b.basicOK(r) {
			return "basic"
		}
		return "bad"
	}
	return ""
}

func (b *BMC) basicOK(r *http.Request) bool {
	u, p, ok := r.BasicAuth()
	return ok && b.credentialsOK(u, p)
}

func (b *BMC) credentialsOK(u, p string) bool {
	return subtle.ConstantTimeCompare([]byte(u), []byte(b.cfg.Username)) == 1 &&
		subtle.ConstantTimeCompare([]byte(p), []byte(b.cfg.Password)) == 1
}

func (b *BMC) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch b.authKind(r) {
		case "token", "basic":
			h(w, r)
		default:
			w.Header().Set("WWW-Authenticate", `Basic realm="simulated BMC"`)
			writeJSON(w, http.StatusUnauthorized, errorBody("Base.1.8.GeneralError", "A general error has occurred. See ExtendedInfo for more information.",
				messageInfo("Base.1.8.NoValidSession", "There is no valid session established with the implementation.", "Critical", "Establish a session before attempting any operations.")))
		}
	}
}

func (b *BMC) serviceRoot(w http.ResponseWriter, r *http.Request) {
	root := map[string]any{
		"@odata.type":    "#ServiceRoot.v1_20_0.ServiceRoot",
		"@odata.id":      "/redfish/v1/",
		"Id":             "RootService",
		"Name":           "Root Service",
		"RedfishVersion": "1.15.0",
		"UUID":           "92384634-2938-2342-8820-489239905423",
		"Systems":        map[string]string{"@odata.id": "/redfish/v1/Systems"},
	}
	if !b.Faults().NoSessions {
		root["SessionService"] = map[string]string{"@odata.id": "/redfish/v1/SessionService"}
		root["Links"] = map[string]any{"Sessions": map[string]string{"@odata.id": "/redfish/v1/SessionService/Sessions"}}
	}
	writeJSON(w, 200, root)
}

func (b *BMC) sessionService(w http.ResponseWriter, r *http.Request) {
	if b.Faults().NoSessions {
		http.NotFound(w, r)
		return
	}
	writeJSON(w, 200, map[string]any{
		"@odata.type": "#SessionService.v1_2_0.SessionService", "@odata.id": "/redfish/v1/SessionService",
		"Id": "SessionService", "Name": "Session Service", "ServiceEnabled": true, "SessionTimeout": 30,
		"Sessions": map[string]string{"@odata.id": "/redfish/v1/SessionService/Sessions"},
	})
}

func (b *BMC) sessionCollection(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	members := []map[string]string{}
	for _, id := range b.sessions {
		members = append(members, map[string]string{"@odata.id": "/redfish/v1/SessionService/Sessions/" + id})
	}
	b.mu.Unlock()
	writeJSON(w, 200, map[string]any{
		"@odata.type": "#SessionCollection.SessionCollection", "@odata.id": "/redfish/v1/SessionService/Sessions",
		"Name": "Session Collection", "Members@odata.count": len(members), "Members": members,
	})
}

func (b *BMC) createSession(w http.ResponseWriter, r *http.Request) {
	f := b.Faults()
	if f.NoSessions {
		writeJSON(w, http.StatusMethodNotAllowed, errorBody("Base.1.8.GeneralError", "Sessions are not supported."))
		return
	}
	var req struct{ UserName, Password string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody("Base.1.8.MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service."))
		return
	}
	if !b.credentialsOK(req.UserName, req.Password) {
		writeJSON(w, http.StatusUnauthorized, errorBody("Base.1.8.GeneralError", "A general error has occurred. See ExtendedInfo for more information.",
			messageInfo("Base.1.8.ResourceAtUriUnauthorized", "While accessing the resource at /redfish/v1/SessionService/Sessions, the service received an authorization error: invalid username or password.", "Critical", "Ensure that the appropriate access is provided for the service in order for it to access the URI.")))
		return
	}
	b.mu.Lock()
	full := f.SessionLimit || len(b.sessions) >= b.cfg.MaxSessions
	var token, id string
	if !full {
		b.nextSess++
		token, id = newToken(), fmt.Sprint(b.nextSess)
		b.sessions[token] = id
	}
	b.mu.Unlock()
	if full {
		writeJSON(w, http.StatusServiceUnavailable, errorBody("Base.1.8.GeneralError", "A general error has occurred. See ExtendedInfo for more information.",
			messageInfo("IDRAC.2.8.RAC0218", "The maximum number of user sessions is reached.", "Critical", "Close one or more sessions and retry the operation."),
			messageInfo("Base.1.8.SessionLimitExceeded", "The session establishment failed due to the number of simultaneous sessions exceeding the limit of the implementation.", "Critical", "Reduce the number of other sessions before trying to establish the session or increase the limit of simultaneous sessions (if supported).")))
		return
	}
	loc := "/redfish/v1/SessionService/Sessions/" + id
	w.Header().Set("X-Auth-Token", token)
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusCreated, map[string]any{
		"@odata.type": "#Session.v1_7_0.Session", "@odata.id": loc, "Id": id, "Name": "User Session", "UserName": req.UserName,
	})
}

func (b *BMC) deleteSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	b.mu.Lock()
	found := false
	for tok, sid := range b.sessions {
		if sid == id {
			delete(b.sessions, tok)
			found = true
		}
	}
	b.mu.Unlock()
	if !found {
		writeJSON(w, http.StatusNotFound, errorBody("Base.1.8.ResourceMissingAtURI", "The resource at the URI "+r.URL.Path+" was not found."))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (b *BMC) systemCollection(w http.ResponseWriter, r *http.Request) {
	members := []map[string]string{}
	for _, s := range b.systems {
		members = append(members, map[string]string{"@odata.id": "/redfish/v1/Systems/" + s.id})
	}
	writeJSON(w, 200, map[string]any{
		"@odata.type": "#ComputerSystemCollection.ComputerSystemCollection", "@odata.id": "/redfish/v1/Systems",
		"Name": "Computer System Collection", "Members@odata.count": len(members), "Members": members,
	})
}

func (b *BMC) system(w http.ResponseWriter, r *http.Request) *system {
	for _, s := range b.systems {
		if s.id == r.PathValue("id") {
			return s
		}
	}
	writeJSON(w, http.StatusNotFound, errorBody("Base.1.8.ResourceMissingAtURI", "The resource at the URI "+r.URL.Path+" was not found.",
		messageInfo("Base.1.8.ResourceMissingAtURI", "The resource at the URI "+r.URL.Path+" was not found.", "Critical", "Place a valid resource at the URI or correct the URI and resubmit the request.")))
	return nil
}

func (b *BMC) allowed() []string {
	if t := b.Faults().ResetTypes; len(t) > 0 {
		return t
	}
	return AllResetTypes
}

func (b *BMC) systemResource(w http.ResponseWriter, r *http.Request) {
	s := b.system(w, r)
	if s == nil {
		return
	}
	path := "/redfish/v1/Systems/" + s.id
	b.mu.Lock()
	power := s.power
	f := b.faults
	b.mu.Unlock()
	reset := map[string]any{"target": path + "/Actions/ComputerSystem.Reset"}
	if f.ActionInfoOnly {
		reset["@Redfish.ActionInfo"] = path + "/ResetActionInfo"
	} else {
		reset["ResetType@Redfish.AllowableValues"] = b.allowed()
	}
	writeJSON(w, 200, map[string]any{
		"@odata.type": "#ComputerSystem.v1_22_0.ComputerSystem", "@odata.id": path,
		"Id": s.id, "Name": "Simulated System " + s.id, "SystemType": "Physical",
		"Manufacturer": "bmctl", "Model": "redfishsim", "PowerState": power,
		"Status":  map[string]string{"State": "Enabled", "Health": "OK"},
		"Actions": map[string]any{"#ComputerSystem.Reset": reset},
	})
}

func (b *BMC) resetActionInfo(w http.ResponseWriter, r *http.Request) {
	s := b.system(w, r)
	if s == nil {
		return
	}
	writeJSON(w, 200, map[string]any{
		"@odata.type": "#ActionInfo.v1_4_0.ActionInfo", "@odata.id": "/redfish/v1/Systems/" + s.id + "/ResetActionInfo",
		"Id": "ResetActionInfo", "Name": "Reset Action Info",
		"Parameters": []map[string]any{{"Name": "ResetType", "Required": true, "DataType": "String", "AllowableValues": b.allowed()}},
	})
}

func (b *BMC) resetAction(w http.ResponseWriter, r *http.Request) {
	s := b.system(w, r)
	if s == nil {
		return
	}
	var req struct{ ResetType string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody("Base.1.8.MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service."))
		return
	}
	if b.Faults().ResetError {
		writeJSON(w, http.StatusBadRequest, errorBody("Base.1.8.GeneralError", "A general error has occurred. See ExtendedInfo for more information.",
			messageInfo("Base.1.8.Success", "Successfully Completed Request", "OK", "None"),
			messageInfo("IDRAC.2.8.SYS446", "Unable to complete the operation because the server is in a power transition state.", "Critical", "Wait for the server to complete the power transition and retry the operation."),
			messageInfo("Base.1.8.PropertyValueConflict", "The property ResetType could not be written because its value conflicts with the value of PowerState.", "Warning", "No resolution is required.")))
		return
	}
	ok := false
	for _, t := range b.allowed() {
		ok = ok || t == req.ResetType
	}
	if !ok {
		msg := fmt.Sprintf("The action ComputerSystem.Reset does not support the parameter value %s for ResetType.", req.ResetType)
		writeJSON(w, http.StatusBadRequest, errorBody("Base.1.8.ActionParameterNotSupported", msg,
			messageInfo("Base.1.8.ActionParameterNotSupported", msg, "Warning", "Remove the parameter supplied and resubmit the request if the operation failed.")))
		return
	}
	b.mu.Lock()
	b.reset(s, req.ResetType)
	b.mu.Unlock()
	b.log.Info("redfishsim: reset", "system", s.id, "type", req.ResetType)
	w.WriteHeader(http.StatusNoContent)
}
