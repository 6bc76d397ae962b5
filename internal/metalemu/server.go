// Package metalemu emulates the part of the Equinix Metal API that bmctl's
// equinix provider uses: projects, hardware reservations, devices and their
// actions, and project SSH keys, with pagination, API-token auth and
// injectable faults (429 with Retry-After, 5xx, problem+json, requests left
// unanswered). It also answers, when told, what the description allows but a
// client may not expect (odd.go): field values out of a client's range,
// paging metadata that cannot be true, a create or read answered with
// another device. It serves the JSON shapes of
// the official OpenAPI description (testdata/metal-openapi), and Validator
// checks both sides of every exchange against that description.
//
// Device states move on reads, not on a clock: each device has a script of
// the states its next reads will show (provisioning then active after a
// create; powering_off, powering_on, active after a reboot), so tests are
// deterministic whatever the machine's speed.
package metalemu

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// BasePath is where the API lives under the server's root, as on
// api.equinix.com. Point a client at server URL + BasePath.
const BasePath = "/metal/v1"

// Reservation describes hardware reservations to add to a project.
type Reservation struct {
	Plan     string // plan slug, e.g. "c3.small.x86"
	Facility string // facility code, e.g. "sv15"
	Metro    string // metro code, e.g. "sv"
	Spare    bool   // spares are not provisionable
}

// Network is what a freshly provisioned device is reachable at.
type Network struct {
	PublicIPv4 string // empty: none
	PublicIPv6 string // empty: none
	// Tags are added to the device, for conventions layered on Metal (for
	// example a non-standard SSH port for devices emulated on localhost).
	Tags []string
}

// DeviceView is a snapshot of an emulated device, for tests to inspect.
type DeviceView struct {
	ID, ProjectID, Hostname, State, Plan, OS, Reservation string
	Tags, SSHKeyIDs                                       []string
	// AuthorizedKeys are the public keys of the device's SSH keys, as
	// its root's authorized_keys would hold them.
	AuthorizedKeys []string
	Reboots        int
}

// Fault makes matching requests fail before they reach the API.
type Fault struct {
	Method     string // empty: any
	Path       string // prefix of the path under BasePath; empty: any
	Status     int
	RetryAfter string // Retry-After header value, if any
	Message    string
	Times      int // how many requests fail; 0 means 1
	// ProblemJSON answers in RFC 9457's application/problem+json, as
	// gateways and mocks in front of the API do, with Message as detail.
	ProblemJSON bool
	// Hang answers nothing until the client gives up.
	Hang bool
}

// ListMeta is the paging part of a list answer's meta, for EditListMeta.
type ListMeta struct {
	Total, CurrentPage, LastPage int
	Omit                         bool // answer without meta (the description does not require it)
}

type device struct {
	id, shortID, projectID, hostname, plan, os string
	state                                      string
	pending                                    []string // states the next reads show
	facility, metro                            string
	tags, sshKeys                              []string
	reservation                                string
	net                                        Network
	private                                    string // private IPv4
	reboots                                    int
	created                                    time.Time
	patch                                      patches // odd values of its answer's fields
}

type reservation struct {
	id, shortID, projectID string
	Reservation
	device  string
	created time.Time
	patch   patches
}

type project struct {
	id, name string
	created  time.Time
	devices  []string // ids, in creation order
	reserves []string
	keys     []string
}

type sshKey struct {
	id, projectID, label, key string
	created                   time.Time
}

// Server is an emulated Metal API. Create it with New and serve Handler,
// for example with httptest.NewServer.
type Server struct {
	token string

	mu              sync.Mutex
	projects        map[string]*project
	devices         map[string]*device
	reservations    map[string]*reservation
	keys            map[string]*sshKey
	faults          []Fault
	requests        []string
	perPage         int
	maxPerPage      int
	provisionStates []string
	rebootStates    []string
	onProvision     func(DeviceView) Network
	onReboot        func(DeviceView)
	nextAddr        int
	editMeta        func(*ListMeta)
	createAnswer    string            // a device to answer creates with, instead of creating one
	readAnswer      map[string]string // device id -> the device a read of it answers with
}

// New returns an empty Metal API that accepts only token.
func New(token string) *Server {
	return &Server{
		token:           token,
		projects:        map[string]*project{},
		devices:         map[string]*device{},
		reservations:    map[string]*reservation{},
		keys:            map[string]*sshKey{},
		readAnswer:      map[string]string{},
		perPage:         10,
		provisionStates: []string{"provisioning", "active"},
		rebootStates:    []string{"powering_off", "powering_on", "active"},
	}
}

// AddProject creates a project and returns its id.
func (s *Server) AddProject(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &project{id: uuid.NewString(), name: name, created: time.Now().UTC()}
	s.projects[p.id] = p
	return p.id
}

// AddReservations adds n hardware reservations like r to a project and
// returns their ids.
func (s *Server) AddReservations(projectID string, n int, r Reservation) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectID]
	var ids []string
	for range n {
		hr := &reservation{id: uuid.NewString(), projectID: projectID, Reservation: r, created: time.Now().UTC()}
		hr.shortID = hr.id[:8]
		s.reservations[hr.id] = hr
		p.reserves = append(p.reserves, hr.id)
		ids = append(ids, hr.id)
	}
	return ids
}

// AddDevice adds an already active device that is not on a reservation (for
// example one that belongs to another team) and returns its id.
func (s *Server) AddDevice(projectID, hostname string, net Network) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := &device{id: uuid.NewString(), projectID: projectID, hostname: hostname, plan: "c3.small.x86",
		os: "ubuntu_24_04", state: "active", facility: "sv15", metro: "sv", net: net,
		tags: slices.Clone(net.Tags), created: time.Now().UTC(), private: s.allocPrivate()}
	d.shortID = d.id[:8]
	s.devices[d.id] = d
	s.projects[projectID].devices = append(s.projects[projectID].devices, d.id)
	return d.id
}

// OnProvision sets what gives a new device its network; by default devices
// get addresses from the documentation ranges (198.51.100.0/24, 2001:db8::/32).
func (s *Server) OnProvision(f func(DeviceView) Network) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onProvision = f
}

// OnReboot sets a function called when a device accepts a reboot action.
func (s *Server) OnReboot(f func(DeviceView)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onReboot = f
}

// SetPerPage sets the default page size of list endpoints.
func (s *Server) SetPerPage(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perPage = n
}

// SetMaxPerPage makes list endpoints answer at most n items a page, fewer
// than a client may ask for (0: no cap but the client's).
func (s *Server) SetMaxPerPage(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxPerPage = n
}

// SetProvisionStates sets the states a new device's reads show after its
// first one (queued); the last one stays.
func (s *Server) SetProvisionStates(states ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.provisionStates = states
}

// SetRebootStates sets the states a device's reads show after a reboot.
func (s *Server) SetRebootStates(states ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rebootStates = states
}

// SetStates makes a device's next reads show states, the last one staying.
func (s *Server) SetStates(id string, states ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.devices[id]
	d.state, d.pending = states[0], slices.Clone(states[1:])
}

// RemoveDevice makes a device vanish, as if someone deleted it elsewhere.
func (s *Server) RemoveDevice(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.devices[id]
	delete(s.devices, id)
	p := s.projects[d.projectID]
	p.devices = slices.DeleteFunc(p.devices, func(x string) bool { return x == id })
	if hr := s.reservations[d.reservation]; hr != nil {
		hr.device = ""
	}
}

// Fail injects a fault.
func (s *Server) Fail(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Times == 0 {
		f.Times = 1
	}
	s.faults = append(s.faults, f)
}

// Device returns a snapshot of a device.
func (s *Server) Device(id string) (DeviceView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[id]
	if !ok {
		return DeviceView{}, false
	}
	return s.view(d), true
}

// Devices returns snapshots of a project's devices in creation order.
func (s *Server) Devices(projectID string) []DeviceView {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []DeviceView
	for _, id := range s.projects[projectID].devices {
		out = append(out, s.view(s.devices[id]))
	}
	return out
}

// Requests returns "METHOD /path?query" of every request so far.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

func (s *Server) view(d *device) DeviceView {
	v := DeviceView{ID: d.id, ProjectID: d.projectID, Hostname: d.hostname, State: d.state, Plan: d.plan,
		OS: d.os, Reservation: d.reservation, Tags: slices.Clone(d.tags), SSHKeyIDs: slices.Clone(d.sshKeys),
		Reboots: d.reboots}
	for _, id := range d.sshKeys {
		v.AuthorizedKeys = append(v.AuthorizedKeys, s.keys[id].key)
	}
	return v
}

// Handler serves the API under BasePath.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+BasePath+"/projects/{id}", s.getProject)
	mux.HandleFunc("GET "+BasePath+"/projects/{id}/devices", s.listDevices)
	mux.HandleFunc("POST "+BasePath+"/projects/{id}/devices", s.createDevice)
	mux.HandleFunc("GET "+BasePath+"/projects/{id}/hardware-reservations", s.listReservations)
	mux.HandleFunc("GET "+BasePath+"/projects/{id}/ssh-keys", s.listSSHKeys)
	mux.HandleFunc("POST "+BasePath+"/projects/{id}/ssh-keys", s.createSSHKey)
	mux.HandleFunc("GET "+BasePath+"/devices/{id}", s.getDevice)
	mux.HandleFunc("POST "+BasePath+"/devices/{id}/actions", s.deviceAction)
	mux.HandleFunc("GET "+BasePath+"/hardware-reservations/{id}", s.getReservation)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "no API path "+r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.fault(w, r) {
			return
		}
		if r.Header.Get("X-Auth-Token") != s.token {
			writeError(w, http.StatusUnauthorized, "Invalid authentication token")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// fault logs the request and answers it with an injected fault, if one matches.
func (s *Server) fault(w http.ResponseWriter, r *http.Request) bool {
	f, ok := s.matchFault(r)
	if !ok {
		return false
	}
	if f.Hang {
		<-r.Context().Done()
		return true
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	msg := f.Message
	if msg == "" {
		msg = http.StatusText(f.Status)
	}
	if f.ProblemJSON {
		writeProblem(w, f.Status, msg)
	} else {
		writeError(w, f.Status, msg)
	}
	return true
}

func (s *Server) matchFault(r *http.Request) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r.Method+" "+r.URL.RequestURI())
	path := strings.TrimPrefix(r.URL.Path, BasePath)
	for i := range s.faults {
		f := &s.faults[i]
		if f.Times == 0 || (f.Method != "" && f.Method != r.Method) || !strings.HasPrefix(path, f.Path) {
			continue
		}
		f.Times--
		return *f, true
	}
	return Fault{}, false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorJSON{Errors: []string{msg}})
}

// writeProblem answers in application/problem+json (RFC 9457), which is
// not the API's error format but what a mock or gateway in front of it
// answers (Prism does, for a path it does not know).
func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail})
}

func stamp(t time.Time) string { return t.Format(time.RFC3339) }

func (s *Server) projectOr404(w http.ResponseWriter, r *http.Request) *project {
	p, ok := s.projects[r.PathValue("id")]
	if !ok {
		writeError(w, http.StatusNotFound, "Not found")
	}
	return p
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectOr404(w, r)
	if p == nil {
		return
	}
	out := projectJSON{ID: p.id, Name: p.name, Href: BasePath + "/projects/" + p.id,
		CreatedAt: stamp(p.created), UpdatedAt: stamp(p.created), Devices: []href{}, SSHKeys: []href{}}
	for _, id := range p.devices {
		out.Devices = append(out.Devices, href{BasePath + "/devices/" + id})
	}
	for _, id := range p.keys {
		out.SSHKeys = append(out.SSHKeys, href{BasePath + "/ssh-keys/" + id})
	}
	writeJSON(w, http.StatusOK, out)
}

// page cuts one page out of n items as asked by ?page and ?per_page, and
// says what Metal's meta says about it.
func (s *Server) page(r *http.Request, n int) (lo, hi int, meta metaJSON) {
	q := r.URL.Query()
	per, _ := strconv.Atoi(q.Get("per_page"))
	if per <= 0 {
		per = s.perPage
	}
	if s.maxPerPage > 0 {
		per = min(per, s.maxPerPage)
	}
	page, _ := strconv.Atoi(q.Get("page"))
	if page <= 0 {
		page = 1
	}
	last := max(1, (n+per-1)/per)
	link := func(p int) href {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("page", strconv.Itoa(p))
		v.Set("per_page", strconv.Itoa(per))
		return href{r.URL.Path + "?" + v.Encode()}
	}
	meta = metaJSON{Self: link(page), First: link(1), Last: link(last), Total: n, CurrentPage: page, LastPage: last}
	if s.editMeta != nil {
		m := ListMeta{Total: n, CurrentPage: page, LastPage: last}
		s.editMeta(&m)
		meta.Total, meta.CurrentPage, meta.LastPage, meta.omit = m.Total, m.CurrentPage, m.LastPage, m.Omit
	}
	if page < last {
		next := link(page + 1)
		meta.Next = &next
	}
	if page > 1 {
		prev := link(page - 1)
		meta.Previous = &prev
	}
	lo = min(n, (page-1)*per)
	return lo, min(n, lo+per), meta
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectOr404(w, r)
	if p == nil {
		return
	}
	var match []*device
	hostname := r.URL.Query().Get("hostname")
	for _, id := range p.devices {
		if d := s.devices[id]; strings.Contains(d.hostname, hostname) {
			match = append(match, d)
		}
	}
	lo, hi, meta := s.page(r, len(match))
	out := struct {
		Devices []any     `json:"devices"`
		Meta    *metaJSON `json:"meta,omitempty"`
	}{Devices: []any{}, Meta: meta.orNil()}
	for _, d := range match[lo:hi] {
		out.Devices = append(out.Devices, s.read(d))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[r.PathValue("id")]
	if !ok {
		writeError(w, http.StatusNotFound, "Not found")
		return
	}
	if other, ok := s.devices[s.readAnswer[d.id]]; ok {
		d = other
	}
	writeJSON(w, http.StatusOK, s.read(d))
}

// read renders a device as one read of it sees it, moving it along its script.
func (s *Server) read(d *device) any {
	out := s.render(d)
	if len(d.pending) > 0 {
		d.state, d.pending = d.pending[0], d.pending[1:]
	}
	return out
}

// render is the device's JSON with its odd values (SetDeviceField).
func (s *Server) render(d *device) any { return d.patch.apply(s.renderDevice(d)) }

func (s *Server) renderDevice(d *device) deviceJSON {
	metro := &metroJSON{ID: uuidFor("metro:" + d.metro), Code: d.metro, Name: strings.ToUpper(d.metro)}
	out := deviceJSON{
		ID: d.id, ShortID: d.shortID, Href: BasePath + "/devices/" + d.id, Hostname: d.hostname,
		State: d.state, CreatedAt: stamp(d.created), UpdatedAt: stamp(d.created), BillingCycle: "hourly",
		Tags: append([]string{}, d.tags...), IPAddresses: []ipJSON{},
		Plan:     planJSON{ID: uuidFor("plan:" + d.plan), Slug: d.plan, Name: d.plan},
		OS:       osJSON{Slug: d.os, Name: d.os},
		Facility: &facilityJSON{ID: uuidFor("facility:" + d.facility), Code: d.facility, Name: strings.ToUpper(d.facility), Metro: metro},
		Metro:    metro,
		Project:  href{BasePath + "/projects/" + d.projectID},
		SSHKeys:  []href{},
	}
	if d.reservation != "" {
		out.HardwareReservation = &href{BasePath + "/hardware-reservations/" + d.reservation}
	}
	for _, k := range d.sshKeys {
		out.SSHKeys = append(out.SSHKeys, href{BasePath + "/ssh-keys/" + k})
	}
	addIP := func(addr string, family, cidr int, public bool) {
		id := uuidFor("ip:" + d.id + addr)
		out.IPAddresses = append(out.IPAddresses, ipJSON{ID: id, Href: BasePath + "/ips/" + id, Address: addr,
			AddressFamily: family, Public: public, Management: true, CIDR: cidr,
			AssignedTo: href{out.Href}, CreatedAt: stamp(d.created)})
	}
	// Metal lists private IPv4 first; a client must look for the public one.
	addIP(d.private, 4, 31, false)
	if d.net.PublicIPv4 != "" {
		addIP(d.net.PublicIPv4, 4, 31, true)
	}
	if d.net.PublicIPv6 != "" {
		addIP(d.net.PublicIPv6, 6, 127, true)
	}
	return out
}

// allocPrivate numbers devices' addresses (private IPv4 and, by default,
// public ones).
func (s *Server) allocPrivate() string {
	s.nextAddr++
	return fmt.Sprintf("10.0.%d.%d", s.nextAddr/254, s.nextAddr%254+1)
}

// uuidFor gives stable ids to things the emulator does not model (plans, metros).
func uuidFor(name string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte(name)).String()
}

func (s *Server) createDevice(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectOr404(w, r)
	if p == nil {
		return
	}
	var req deviceCreateRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid JSON: "+err.Error())
		return
	}
	if req.Plan == "" || req.OS == "" {
		writeError(w, http.StatusUnprocessableEntity, "plan and operating_system are required")
		return
	}
	hr, ok := s.reservations[req.HardwareReservationID]
	switch {
	case req.HardwareReservationID == "":
		writeError(w, http.StatusUnprocessableEntity, "this emulated project has on-demand capacity in no metro; use a hardware reservation")
		return
	case !ok || hr.projectID != p.id:
		writeError(w, http.StatusUnprocessableEntity, "hardware reservation "+req.HardwareReservationID+" not found in project")
		return
	case hr.device != "" || hr.Spare:
		writeError(w, http.StatusUnprocessableEntity, "hardware reservation "+hr.id+" is not provisionable")
		return
	case req.Plan != hr.Plan:
		writeError(w, http.StatusUnprocessableEntity, "plan "+req.Plan+" does not match hardware reservation plan "+hr.Plan)
		return
	case req.Metro != "" && req.Metro != hr.Metro:
		writeError(w, http.StatusUnprocessableEntity, "hardware reservation "+hr.id+" is not in metro "+req.Metro)
		return
	}
	for _, k := range req.ProjectSSHKeys {
		if key, ok := s.keys[k]; !ok || key.projectID != p.id {
			writeError(w, http.StatusUnprocessableEntity, "ssh key "+k+" not found in project")
			return
		}
	}
	if d, ok := s.devices[s.createAnswer]; ok {
		writeJSON(w, http.StatusCreated, s.render(d))
		return
	}
	d := &device{id: uuid.NewString(), projectID: p.id, hostname: req.Hostname, plan: req.Plan, os: req.OS,
		state: "queued", pending: slices.Clone(s.provisionStates), facility: hr.Facility, metro: hr.Metro,
		tags: slices.Clone(req.Tags), sshKeys: slices.Clone(req.ProjectSSHKeys), reservation: hr.id,
		created: time.Now().UTC(), private: s.allocPrivate()}
	d.shortID = d.id[:8]
	if s.onProvision != nil {
		d.net = s.onProvision(s.view(d))
	} else {
		d.net = Network{PublicIPv4: fmt.Sprintf("198.51.100.%d", s.nextAddr%254+1), PublicIPv6: fmt.Sprintf("2001:db8::%x", s.nextAddr)}
	}
	d.tags = append(d.tags, d.net.Tags...)
	hr.device = d.id
	s.devices[d.id] = d
	p.devices = append(p.devices, d.id)
	writeJSON(w, http.StatusCreated, s.render(d))
}

func (s *Server) deviceAction(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[r.PathValue("id")]
	if !ok {
		writeError(w, http.StatusNotFound, "Not found")
		return
	}
	var req actionRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid JSON: "+err.Error())
		return
	}
	if req.Type != "reboot" {
		writeError(w, http.StatusUnprocessableEntity, "the emulator supports only the reboot action, not "+req.Type)
		return
	}
	if d.state != "active" {
		writeError(w, http.StatusUnprocessableEntity, "device is "+d.state+", not active; cannot reboot")
		return
	}
	d.reboots++
	if len(s.rebootStates) > 0 {
		d.state, d.pending = s.rebootStates[0], slices.Clone(s.rebootStates[1:])
	}
	if s.onReboot != nil {
		s.onReboot(s.view(d))
	}
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) renderReservation(hr *reservation) any {
	return hr.patch.apply(s.reservationJSON(hr))
}

func (s *Server) reservationJSON(hr *reservation) reservationJSON {
	out := reservationJSON{ID: hr.id, ShortID: hr.shortID, Href: BasePath + "/hardware-reservations/" + hr.id,
		CreatedAt: stamp(hr.created),
		Facility: facilityJSON{ID: uuidFor("facility:" + hr.Facility), Code: hr.Facility, Name: strings.ToUpper(hr.Facility),
			Metro: &metroJSON{ID: uuidFor("metro:" + hr.Metro), Code: hr.Metro, Name: strings.ToUpper(hr.Metro)}},
		Plan:          planJSON{ID: uuidFor("plan:" + hr.Plan), Slug: hr.Plan, Name: hr.Plan},
		Project:       href{BasePath + "/projects/" + hr.projectID},
		Provisionable: !hr.Spare && hr.device == "",
		Spare:         hr.Spare,
	}
	if hr.device != "" {
		out.Device = &href{BasePath + "/devices/" + hr.device}
	}
	return out
}

func (s *Server) listReservations(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectOr404(w, r)
	if p == nil {
		return
	}
	var match []*reservation
	onlyFree := r.URL.Query().Get("provisionable") == "only"
	for _, id := range p.reserves {
		if hr := s.reservations[id]; !onlyFree || (!hr.Spare && hr.device == "") {
			match = append(match, hr)
		}
	}
	lo, hi, meta := s.page(r, len(match))
	out := struct {
		HardwareReservations []any     `json:"hardware_reservations"`
		Meta                 *metaJSON `json:"meta,omitempty"`
	}{HardwareReservations: []any{}, Meta: meta.orNil()}
	for _, hr := range match[lo:hi] {
		out.HardwareReservations = append(out.HardwareReservations, s.renderReservation(hr))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getReservation(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hr, ok := s.reservations[r.PathValue("id")]
	if !ok {
		writeError(w, http.StatusNotFound, "Not found")
		return
	}
	writeJSON(w, http.StatusOK, s.renderReservation(hr))
}

func (s *Server) renderKey(k *sshKey) sshKeyJSON {
	return sshKeyJSON{ID: k.id, Href: BasePath + "/ssh-keys/" + k.id, Label: k.label, Key: k.key,
		Fingerprint: uuidFor("fp:" + k.key)[:23], CreatedAt: stamp(k.created), UpdatedAt: stamp(k.created),
		Entity: href{BasePath + "/projects/" + k.projectID}}
}

func (s *Server) listSSHKeys(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectOr404(w, r)
	if p == nil {
		return
	}
	out := struct {
		SSHKeys []sshKeyJSON `json:"ssh_keys"`
	}{SSHKeys: []sshKeyJSON{}}
	for _, id := range p.keys {
		out.SSHKeys = append(out.SSHKeys, s.renderKey(s.keys[id]))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createSSHKey(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectOr404(w, r)
	if p == nil {
		return
	}
	var req sshKeyCreateRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Key == "" || req.Label == "" {
		writeError(w, http.StatusUnprocessableEntity, "label and key are required")
		return
	}
	k := &sshKey{id: uuid.NewString(), projectID: p.id, label: req.Label, key: req.Key, created: time.Now().UTC()}
	s.keys[k.id] = k
	p.keys = append(p.keys, k.id)
	writeJSON(w, http.StatusCreated, s.renderKey(k))
}

// AddSSHKey adds a project SSH key directly and returns its id.
func (s *Server) AddSSHKey(projectID, label, key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := &sshKey{id: uuid.NewString(), projectID: projectID, label: label, key: key, created: time.Now().UTC()}
	s.keys[k.id] = k
	s.projects[projectID].keys = append(s.projects[projectID].keys, k.id)
	return k.id
}
