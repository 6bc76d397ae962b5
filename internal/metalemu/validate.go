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
	"github.com/getkin/kin-openapi/routers/legacy"
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
	router routers.Router
	errSch *openapi3.Schema // the Error schema every 4xx/5xx body follows

	mu         sync.Mutex
	violations []string
	checked    int
}

// NewValidator loads the description for a server reachable at serverURL
// (scheme and host; the API is under BasePath).
func NewValidator(serverURL string) (*Validator, error) {
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = true
	doc, err := loader.LoadFromFile(SpecPath())
	if err != nil {
		return nil, fmt.Errorf("load Metal OpenAPI description: %w", err)
	}
	// The router matches requests against the document's servers; ours is local.
	doc.Servers = openapi3.Servers{{URL: strings.TrimSuffix(serverURL, "/") + BasePath}}
	// One schema elsewhere in the document has a Perl-style pattern Go cannot
	// compile; patterns on the paths we use are unaffected.
	router, err := legacy.NewRouter(doc, openapi3.DisableSchemaPatternValidation())
	if err != nil {
		return nil, fmt.Errorf("route Metal OpenAPI description: %w", err)
	}
	errSch := doc.Components.Schemas["Error"]
	if errSch == nil || errSch.Value == nil {
		return nil, errors.New("Metal OpenAPI description has no Error schema")
	}
	return &Validator{router: router, errSch: errSch.Value}, nil
}

// Wrap validates the exchanges that pass through next.
func (v *Validator) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		what := r.Method + " " + r.URL.RequestURI()

		route, params, err := v.router.FindRoute(r)
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
		opts.WithCustomSchemaErrorFunc(func(err *openapi3.SchemaError) string { return err.Error() })
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
