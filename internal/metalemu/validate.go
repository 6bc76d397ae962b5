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
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
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

// loadSpec loads the description once per process: it is large (147 paths)
// and takes seconds to resolve.
func loadSpec() (*openapi3.T, error) {
	spec.once.Do(func() {
		loader := openapi3.NewLoader()
		loader.IsExternalRefsAllowed = true
		spec.doc, spec.err = loader.LoadFromFile(SpecPath())
		if spec.err != nil {
			spec.err = fmt.Errorf("load Metal OpenAPI description: %w", spec.err)
		}
	})
	return spec.doc, spec.err
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
			v.violate("%s: not in the Metal API: %v", what, err)
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
