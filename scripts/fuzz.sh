#!/bin/sh
# Runs every Go fuzz target in the module (func FuzzXxx in a _test.go file)
# for FUZZTIME each (default 30s), one worker (FUZZ_WORKERS), one after the
# other: go test -fuzz takes one target per run. A crash fails the run and
# leaves its input in the package's testdata/fuzz/FuzzXxx/, to be committed
# with the fix. Normal `go test` runs those inputs and each target's seeds.
# Minimizing a new input is capped at 5s (the default minute shows as
# "0/sec" stretches and takes most of a short run).
set -eu
FUZZTIME=${FUZZTIME:-30s}
FUZZ_WORKERS=${FUZZ_WORKERS:-1}
GO=${GO:-go}
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
	dir=$(dirname "$file")
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
		echo "== $dir $target ($FUZZTIME)"
		if ! out=$($GO test -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s -parallel "$FUZZ_WORKERS" "$dir" 2>&1); then
			echo "$out" | tail -n 40
			exit 1
		fi
		echo "$out" | grep '^fuzz: elapsed' | tail -n 1
	done
done
