#!/usr/bin/env bash
# Lifeboat setup: Debian packages and the Python venv. Idempotent and fast on
# rerun; run as root on Debian 12 (bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the project needs (append only).
PACKAGES=(
  postgresql postgresql-contrib zstd pigz gnupg age
  podman runc debootstrap uidmap fuse-overlayfs slirp4netns
)

missing=()
for pkg in "${PACKAGES[@]}"; do
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
VENV=.venv
STAMP="$VENV/.requirements.stamp"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
if [[ ! -f "$STAMP" || requirements.txt -nt "$STAMP" ]]; then
  "$VENV/bin/python" -m pip install --quiet -r requirements.txt
  touch "$STAMP"
fi
echo "setup.sh: ok (packages present, $VENV up to date)"
