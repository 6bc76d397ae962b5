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

bench: setup build
	$(GO) test -run '^$$' -bench . -benchtime 3s ./pkg/bmdb/

demo: setup build
	./$(BIN) demo

generate:
	$(GO) generate ./...

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...

clean:
	rm -rf bin
