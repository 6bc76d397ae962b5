# bmctl: the things a person does twice.
GO ?= go
BIN := bin/bmctl

.PHONY: setup build test race-free bench demo generate lint clean

# Installs what is missing (PostgreSQL server binaries from Debian's packages);
# quick when nothing is.
setup:
	@./scripts/setup.sh

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/bmctl

# go vet, then every test with the race detector against real PostgreSQL.
test: setup
	$(GO) vet ./...
	$(GO) test -race -timeout 30m ./...

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
	rm -rf bin
