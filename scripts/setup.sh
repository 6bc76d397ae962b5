#!/usr/bin/env bash
# Installs what bmctl needs and is missing: PostgreSQL's server binaries (for
# the embedded database, the demo and the tests), ipmitool (IPMI BMCs) and
# openipmi's ipmi_sim (the IPMI tests), from Debian's packages.
# Idempotent, and quick when everything is there.
set -euo pipefail

have_pg() {
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then return 0; fi
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]
}

# install_debian WHY PACKAGE...: installs Debian packages as root or through
# sudo, or says what to run.
sudo=""
install_debian() {
  why=$1; shift
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo=sudo; else
      echo "setup: $why; as root run: apt-get install -y $*" >&2
      exit 1
    fi
  fi
  echo "setup: installing $* from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! command -v go >/dev/null 2>&1; then
  echo "setup: Go is not on PATH; install Go 1.26 (https://go.dev/dl) and retry" >&2
  exit 1
fi

if ! have_pg; then
  install_debian "PostgreSQL server binaries are missing" postgresql
  # bmctl runs its own clusters; Debian's default one is not needed.
  $sudo service postgresql stop >/dev/null 2>&1 || true
fi

if ! have_pg; then
  echo "setup: PostgreSQL server binaries still not found after install" >&2
  exit 1
fi

# IPMI: ipmitool talks to BMCs, ipmi_sim (openipmi) is the tests' BMC.
if ! command -v ipmitool >/dev/null 2>&1 || ! command -v ipmi_sim >/dev/null 2>&1; then
  install_debian "ipmitool or ipmi_sim is missing" ipmitool openipmi
fi

# The package test (packaging/) checks the units with systemd-analyze; the
# monitoring test checks the alert rules with promtool.
need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  echo "setup: installing ${need[*]} from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Only promtool is wanted, not a Prometheus server.
  if [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    $sudo service prometheus stop >/dev/null 2>&1 || true
  fi
fi
