# bmctl: the things a person does twice.
GO ?= go
BIN := bin/bmctl

.PHONY: setup build test race-free bench demo generate lint clean package fuzz

# Installs what is missing (PostgreSQL server binaries from Debian's packages);
# quick when nothing is.
setup:
	@./scripts/setup.sh

VERSION ?= $(shell ./scripts/version.sh)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(shell git rev-parse HEAD 2>/dev/null) -X main.buildTime=$(shell date -u +%Y-%m-%dT%H:%M:%SZ)

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/bmctl

# dist/bmctl_<version>_amd64.deb: the binary, hardened systemd units for the
# shepherd and the endpoint, the commented default config, completion, man
# pages, Prometheus rules and the Grafana dashboard (scripts/package.sh).
package:
	@VERSION=$(VERSION) GO=$(GO) ./scripts/package.sh

# go vet, then every test with the race detector against real PostgreSQL.
test: setup
	$(GO) vet ./...
	$(GO) test -race -timeout 30m ./...

# Every fuzz target for FUZZTIME (default 30s) each; `make test` runs their
# seed corpora and saved crashers as ordinary tests.
fuzz: setup
	@FUZZTIME=$(or $(FUZZTIME),30s) GO=$(GO) ./scripts/fuzz.sh

# One table, one run, on a dedicated throwaway PostgreSQL cluster: pgbench's
# ceiling, claim+finish against the seed's way, candidate latency at 100k and
# 1M machines, shepherd memory. Saves the table and the plans in bench/.
# About 13 minutes. The Go benchmarks: go test -run '^$' -bench . ./pkg/bmdb/
bench: setup build
	./$(BIN) dev bench --out bench

demo: setup build
	./$(BIN) demo

generate:
	$(GO) generate ./...

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...

clean:
	rm -rf bin dist
