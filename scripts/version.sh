#!/usr/bin/env bash
# Prints bmctl's version, usable as a Debian version: 1.2.3 from the tag
# v1.2.3, 1.2.3+4.gabc1234 four commits after it, and without a tag
# 0.0.0+git<commit date>.<commit>; +dirty for uncommitted changes.
set -euo pipefail
cd "$(dirname "$0")/.."
if d=$(git describe --tags --match 'v[0-9]*' --dirty=+dirty 2>/dev/null); then
  d=${d#v}
  echo "$d" | sed -E 's/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/; s/\+dirty$/.dirty/; s/^([^+]*)\.dirty$/\1+dirty/'
  exit 0
fi
if c=$(git log -1 --format='%cd.%h' --date=format:'%Y%m%d%H%M%S' 2>/dev/null); then
  v="0.0.0+git$c"
  if ! git diff --quiet HEAD -- 2>/dev/null; then v="$v.dirty"; fi
  echo "$v"
  exit 0
fi
echo "0.0.0+unknown"
