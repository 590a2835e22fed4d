#!/usr/bin/env bash
# Download the wheels of requirements-runtime.txt into a directory (default
# .cache/wheelhouse), for the lifeboat_install role's `wheelhouse` mode: hosts
# without access to a package index. Wheels are for THIS machine's Python version
# and architecture; build on a machine that matches the job hosts.
#
#   bash scripts/wheelhouse.sh [DIR]          (make wheelhouse)
#
# Cached: nothing is downloaded when DIR already holds the wheels of the current
# requirements-runtime.txt (a stamp with its sha256).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-${repo_root}/.cache/wheelhouse}"
venv="${LIFEBOAT_VENV:-${repo_root}/.venv}"
req="${repo_root}/requirements-runtime.txt"

log() { printf '%s wheelhouse.sh: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

[[ -x "${venv}/bin/pip" ]] || { log "no pip in ${venv} (run make setup)"; exit 1; }
want="$( { sha256sum "${req}" | cut -d' ' -f1; "${venv}/bin/python" -c 'import sys, platform; print(sys.version_info[:2], platform.machine())'; } | sha256sum | cut -d' ' -f1)"
if [[ -f "${dir}/.stamp" && "$(cat "${dir}/.stamp")" == "${want}" ]]; then
  log "${dir} is up to date"
  exit 0
fi
rm -rf "${dir}.partial"
mkdir -p "${dir}.partial"
log "downloading the wheels of requirements-runtime.txt"
"${venv}/bin/pip" download --quiet --disable-pip-version-check --only-binary=:all: \
  -r "${req}" -d "${dir}.partial" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
printf '%s\n' "${want}" > "${dir}.partial/.stamp"
rm -rf "${dir}"
mv "${dir}.partial" "${dir}"
log "$(find "${dir}" -name '*.whl' | wc -l) wheels in ${dir}"
