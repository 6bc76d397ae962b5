package metalemu

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// Answers that the description allows but a client may not expect: odd
// field values, paging metadata that cannot be true, and answers about
// another device than the one asked for. Metal has answered some of these;
// an independent mock of the description (Prism) answers all of them.

// patches are odd values of an answer's fields, by dotted path
// ("provisioning_percentage", "ip_addresses.1.address_family").
type patches map[string]any

// apply returns v, as JSON, with the patches applied.
func (p patches) apply(v any) any {
	if len(p) == 0 {
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		panic(err)
	}
	paths := make([]string, 0, len(p))
	for k := range p {
		paths = append(paths, k)
	}
	slices.Sort(paths)
	for _, path := range paths {
		setPath(doc, strings.Split(path, "."), p[path])
	}
	return doc
}

// setPath sets doc's element at path, creating objects on the way; a path
// through an array element that does not exist is ignored.
func setPath(doc any, path []string, v any) {
	for i, key := range path {
		last := i == len(path)-1
		switch node := doc.(type) {
		case map[string]any:
			if last {
				node[key] = v
				return
			}
			if _, ok := node[key]; !ok {
				node[key] = map[string]any{}
			}
			doc = node[key]
		case []any:
			n, err := strconv.Atoi(key)
			if err != nil || n < 0 || n >= len(node) {
				return
			}
			if last {
				node[n] = v
				return
			}
			doc = node[n]
		default:
			return
		}
	}
}

// SetDeviceField makes the device's answers carry value at path (dotted,
// array elements by index: "ip_addresses.1.address_family").
func (s *Server) SetDeviceField(id, path string, value any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.devices[id]
	if d.patch == nil {
		d.patch = patches{}
	}
	d.patch[path] = value
}

// SetReservationField is SetDeviceField for a hardware reservation.
func (s *Server) SetReservationField(id, path string, value any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hr := s.reservations[id]
	if hr.patch == nil {
		hr.patch = patches{}
	}
	hr.patch[path] = value
}

// EditListMeta has f edit the paging metadata of every list answer (nil:
// answer truthfully again).
func (s *Server) EditListMeta(f func(*ListMeta)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.editMeta = f
}

// AnswerCreatesWith makes device creates create nothing and answer with
// the existing device id ("": create again).
func (s *Server) AnswerCreatesWith(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.createAnswer = id
}

// AnswerReadsWith makes reads of device asked answer with device other
// ("": truthfully again).
func (s *Server) AnswerReadsWith(asked, other string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if other == "" {
		delete(s.readAnswer, asked)
		return
	}
	s.readAnswer[asked] = other
}
