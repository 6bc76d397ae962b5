package heartbeat_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/time/rate"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
)

// fuzzMachine is the started machine the fuzzed heartbeats name; its agent
// key is fuzzKey's.
const fuzzMachine = "00000000-0000-4000-8000-00000000f022"

// FuzzHeartbeatBody sends whatever body an agent might to the real handler,
// over a real database, as the endpoint's role: the answer is always a
// refusal or an acceptance, never a server error, and whatever it accepted
// is stored.
func FuzzHeartbeatBody(f *testing.F) {
	ctx := context.Background()
	owner, err := bmdb.Open(ctx, pgtest.URL(f))
	if err != nil {
		f.Fatal(err)
	}
	defer owner.Close()
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	if _, err := owner.Pool.Exec(ctx, `INSERT INTO machines (machine_id) VALUES ($1)`, fuzzMachine); err != nil {
		f.Fatal(err)
	}
	if _, err := owner.Pool.Exec(ctx, `INSERT INTO machine_agent_started (machine_id, agent_started_at, agent_public_key) VALUES ($1, now(), $2)`,
		fuzzMachine, []byte(key.Public().(ed25519.PublicKey))); err != nil {
		f.Fatal(err)
	}
	pool, err := heartbeat.OpenPool(ctx, pgtest.LoginURL(f, owner.URL(), bmdb.RoleEndpoint), 4)
	if err != nil {
		f.Fatal(err)
	}
	defer pool.Close()
	srv := heartbeat.New(heartbeat.Config{Pool: pool, AgentRate: rate.Inf, BatchWait: -1})
	h := srv.Handler()
	ca, err := devca.Ensure(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	certs, err := ca.ServerCertificate([]string{"agent"})
	if err != nil {
		f.Fatal(err)
	}
	// The handler reads only the key of the peer's certificate.
	peer, err := x509.ParseCertificate(certs.Certificate[0])
	if err != nil {
		f.Fatal(err)
	}
	peer.PublicKey = key.Public()

	for _, s := range []string{
		`{"machine_id":"` + fuzzMachine + `"}`,
		`{"machine_id":"` + fuzzMachine + `","hardware":{"cpu_model":"Test CPU","cpu_count":8,"memory_bytes":68719476736,"disks":[{"name":"nvme0n1","size_bytes":1099511627776}],"nics":[{"name":"eth0","mac":"02:00:00:00:00:01"}]}}`,
		`{"machine_id":"` + fuzzMachine + `","hardware":{"cpu_model":"A\u0000B"}}`,
		`{"machine_id":"` + fuzzMachine + `","hardware":{"cpu_model":"\ud800"}}`,
		`{"machine_id":"` + fuzzMachine + `","hardware":{"cpu_count":-1,"memory_bytes":18446744073709551615}}`,
		`{"machine_id":"00000000-0000-4000-8000-000000000000"}`,
		`{"machine_id":"not a uuid"}`,
		`{"machine_id":"` + fuzzMachine + `","hardware":null}`,
		`[]`, `null`, ``, `{`, `{"machine_id":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, heartbeat.Path, bytes.NewReader(body))
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{peer}}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusForbidden, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("body %q: status %d: %s", body, w.Code, w.Body)
		}
	})
}
