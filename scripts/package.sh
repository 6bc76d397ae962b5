#!/usr/bin/env bash
# Builds dist/bmctl_<version>_amd64.deb (make package) with nfpm, fetched
# from the Go module proxy at a pinned version: the binary (version, commit
# and build time stamped in), systemd units for the shepherd and the
# endpoint, a commented default config, bash/zsh/fish completion, man pages
# from the command tree, the Prometheus rules and the Grafana dashboard.
# VERSION and OUT override the version and the output directory.
set -euo pipefail
cd "$(dirname "$0")/.."
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
VERSION=${VERSION:-$(scripts/version.sh)}
OUT=${OUT:-dist}
GO=${GO:-go}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $GO build -trimpath \
  -ldflags "-s -w -X main.version=$VERSION -X main.commit=$commit -X main.buildTime=$built" \
  -o "$STAGE/bmctl" ./cmd/bmctl

# What the binary generates, in a clean environment (no config file, no
# BMCTL_* variables), with the services' state directory in the defaults.
gen() { env -i PATH="$PATH" HOME="$STAGE" BMCTL_STATE_DIR=/var/lib/bmctl "$STAGE/bmctl" --config /dev/null "$@"; }
gen config default >"$STAGE/config.yaml"
mkdir -p "$STAGE/completion"
gen completion bash >"$STAGE/completion/bmctl.bash"
gen completion zsh >"$STAGE/completion/_bmctl"
gen completion fish >"$STAGE/completion/bmctl.fish"
gen dev man "$STAGE/man"
gzip -9n "$STAGE"/man/*.1

mkdir -p "$STAGE/docs" "$OUT"
cp -r packaging monitoring "$STAGE/"
cp docs/metrics.md "$STAGE/docs/"
deb="$(cd "$OUT" && pwd)/bmctl_${VERSION}_amd64.deb"
(cd "$STAGE" && VERSION=$VERSION $GO run $NFPM package --packager deb --config packaging/nfpm.yaml --target "$deb") >&2
echo "$deb"
