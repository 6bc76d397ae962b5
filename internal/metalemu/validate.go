package metalemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"go.yaml.in/yaml/v3"
)

// SpecPath is the official Metal OpenAPI description kept beside this
// package (a copy of /work/shared/metal-openapi, so CI needs nothing else).
func SpecPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata", "metal-openapi", "openapi3.yaml")
}

// Validator checks every request a client sends and every response the
// emulator answers against the Metal OpenAPI description, and remembers
// each violation.
type Validator struct {
	doc    *openapi3.T
	errSch *openapi3.Schema // the Error schema every 4xx/5xx body follows

	mu         sync.Mutex
	violations []string
	checked    int
}

var spec struct {
	once sync.Once
	doc  *openapi3.T
	err  error
}

// Paths are the API paths the emulator serves: the validator loads only
// these from the description, which is large (147 paths, 377 files) and
// takes many seconds to resolve whole.
var Paths = []string{
	"/projects/{id}",
	"/projects/{id}/devices",
	"/projects/{id}/hardware-reservations",
	"/projects/{id}/ssh-keys",
	"/devices/{id}",
	"/devices/{id}/actions",
	"/hardware-reservations/{id}",
}

// loadSpec loads, once per process, the description's entry document cut
// down to Paths (plus security and the Error schema); everything those
// paths refer to is resolved from the official files as they are.
func loadSpec() (*openapi3.T, error) {
	spec.once.Do(func() {
		spec.doc, spec.err = loadSubset()
		if spec.err != nil {
			spec.err = fmt.Errorf("load Metal OpenAPI description: %w", spec.err)
		}
	})
	return spec.doc, spec.err
}

func loadSubset() (*openapi3.T, error) {
	raw, err := os.ReadFile(SpecPath())
	if err != nil {
		return nil, err
	}
	var whole map[string]any
	if err := yaml.Unmarshal(raw, &whole); err != nil {
		return nil, err
	}
	paths, _ := whole["paths"].(map[string]any)
	components, _ := whole["components"].(map[string]any)
	schemas, _ := components["schemas"].(map[string]any)
	subset := map[string]any{
		"openapi":  whole["openapi"],
		"info":     whole["info"],
		"security": whole["security"],
		"servers":  whole["servers"],
		"components": map[string]any{
			"securitySchemes": components["securitySchemes"],
			"schemas":         map[string]any{"Error": schemas["Error"]},
		},
	}
	kept := map[string]any{}
	for _, p := range Paths {
		if paths[p] == nil {
			return nil, fmt.Errorf("the description has no path %s", p)
		}
		kept[p] = paths[p]
	}
	subset["paths"] = kept
	data, err := json.Marshal(subset)
	if err != nil {
		return nil, err
	}
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = true
	return loader.LoadFromDataWithPath(data, &url.URL{Path: SpecPath()})
}

// NewValidator returns a validator with no violations yet.
func NewValidator() (*Validator, error) {
	doc, err := loadSpec()
	if err != nil {
		return nil, err
	}
	errSch := doc.Components.Schemas["Error"]
	if errSch == nil || errSch.Value == nil {
		return nil, errors.New("Metal OpenAPI description has no Error schema")
	}
	return &Validator{doc: doc, errSch: errSch.Value}, nil
}

// route finds the operation for a request by its path under BasePath. (The
// kin-openapi routers validate the whole document first, which fails on a
// schema elsewhere in it that has nothing to do with the paths we use.)
func (v *Validator) route(r *http.Request) (*routers.Route, map[string]string, error) {
	path, ok := strings.CutPrefix(r.URL.Path, BasePath)
	if !ok {
		return nil, nil, fmt.Errorf("path is not under %s", BasePath)
	}
	got := strings.Split(strings.Trim(path, "/"), "/")
	var (
		best       *routers.Route
		bestParams map[string]string
		bestFixed  = -1
	)
	// Literal segments win over parameters, as /devices/batch over /devices/{id}.
	for tmpl, item := range v.doc.Paths.Map() {
		want := strings.Split(strings.Trim(tmpl, "/"), "/")
		if len(want) != len(got) {
			continue
		}
		params, fixed := map[string]string{}, 0
		for i, seg := range want {
			if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
				params[seg[1:len(seg)-1]] = got[i]
			} else if seg == got[i] {
				fixed++
			} else {
				params = nil
				break
			}
		}
		if params == nil || fixed <= bestFixed {
			continue
		}
		best = &routers.Route{Spec: v.doc, Path: tmpl, PathItem: item, Method: r.Method, Operation: item.GetOperation(r.Method)}
		bestParams, bestFixed = params, fixed
	}
	if best == nil {
		return nil, nil, errors.New("no such path")
	}
	if best.Operation == nil {
		return nil, nil, fmt.Errorf("%s has no %s operation", best.Path, r.Method)
	}
	return best, bestParams, nil
}

// Wrap validates the exchanges that pass through next.
func (v *Validator) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		what := r.Method + " " + r.URL.RequestURI()

		route, params, err := v.route(r)
		if err != nil {
			v.violate("%s: not among the Metal API paths the emulator serves: %v", what, err)
			next.ServeHTTP(w, r)
			return
		}
		opts := &openapi3filter.Options{
			MultiError: true,
			// The emulator checks the token's value; the description only
			// requires that the header is there.
			AuthenticationFunc: func(_ context.Context, in *openapi3filter.AuthenticationInput) error {
				if in.RequestValidationInput.Request.Header.Get(in.SecurityScheme.Name) == "" {
					return errors.New("no " + in.SecurityScheme.Name + " header")
				}
				return nil
			},
		}
		in := &openapi3filter.RequestValidationInput{Request: r.Clone(r.Context()), PathParams: params, Route: route, Options: opts}
		in.Request.Body = io.NopCloser(bytes.NewReader(body))
		if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
			v.violate("request %s %s: %v", what, body, err)
		}

		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		if r.Context().Err() != nil {
			// The client gave up (Fault.Hang) before an answer: none to check.
			v.mu.Lock()
			v.checked++
			v.mu.Unlock()
			return
		}
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())

		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code,
			Header: rec.Header(), Options: &openapi3filter.Options{MultiError: true, IncludeResponseStatus: !undocumentedStatus(rec.Code)}}
		out.SetBodyBytes(rec.Body.Bytes())
		if err := openapi3filter.ValidateResponse(r.Context(), out); err != nil {
			v.violate("response %d to %s: %s: %v", rec.Code, what, rec.Body.Bytes(), err)
		}
		if undocumentedStatus(rec.Code) {
			var doc any
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				v.violate("response %d to %s: body is not JSON: %v", rec.Code, what, err)
			} else if err := v.errSch.VisitJSON(doc); err != nil {
				v.violate("response %d to %s: not an Error: %v", rec.Code, what, err)
			}
		}
		v.mu.Lock()
		v.checked++
		v.mu.Unlock()
	})
}

// undocumentedStatus: the description documents 4xx answers per path but
// not the rate limit (429) nor server errors, which any path can answer.
func undocumentedStatus(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}

func (v *Validator) violate(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.violations = append(v.violations, fmt.Sprintf(format, args...))
}

// Violations returns what did not conform, and how many exchanges were checked.
func (v *Validator) Violations() (violations []string, checked int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.violations...), v.checked
}
