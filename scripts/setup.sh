#!/usr/bin/env bash
# Lifeboat setup: Debian packages and the Python venv. Idempotent and fast on
# rerun; run as root on Debian 12 (bookworm). A fresh machine needs only git and
# make besides (README: prerequisites).
#
#   bash scripts/setup.sh          # what `make backup` needs (make setup)
#   bash scripts/setup.sh --test   # also what `make test` needs (molecule, fresh-check)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, one per line; add new ones to the list that needs them.
# Needed by the lab, `make backup`, `make verify` and the other playbooks:
PACKAGES=(
  python3-venv          # `python3 -m venv` (a minimal Debian 12 lacks ensurepip)
  postgresql
  postgresql-contrib
  zstd
  pigz
  gnupg
  age
)
# Needed only by `make test` (molecule scenarios, make fresh-check):
TEST_PACKAGES=(
  podman
  runc
  debootstrap
  uidmap
  fuse-overlayfs
  slirp4netns
  prometheus chromium   # promtool and headless Chromium: the monitor's metrics and report tests
  awscli                # the runbook's by-hand steps (tests/integration/test_runbook.py runs them as written)
  pgbackrest            # `make bench`: the physical-backup anchor beside Lifeboat's backup (bench/pgbackrest_anchor.py)
)

wanted=("${PACKAGES[@]}")
case "${1:-}" in
  --test) wanted+=("${TEST_PACKAGES[@]}") ;;
  "") ;;
  *) echo "setup.sh: unknown argument '$1' (use --test or nothing)" >&2; exit 2 ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh: missing Debian packages (${missing[*]}); rerun as root" >&2
    exit 1
  fi
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python venv with the pinned requirements (skipped when the stamp is newer).
# A venv whose creation failed half-way (python but no pip) is made again.
VENV=.venv
STAMP="$VENV/.requirements.stamp"
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  rm -f "$STAMP"
fi
if [[ ! -f "$STAMP" || requirements.txt -nt "$STAMP" ]]; then
  "$VENV/bin/python" -m pip install --quiet -r requirements.txt
  touch "$STAMP"
fi
echo "setup.sh: ok (packages present, $VENV up to date)"
