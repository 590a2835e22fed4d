#!/usr/bin/env bash
# make fresh-check: the README's front door on a fresh Debian 12, every time.
#
# Builds once per machine (cached in podman's image store, rebuilt when its inputs
# change) a minimal Debian 12 image: debootstrap --variant=minbase with python3 and
# ca-certificates only (scripts/build-image.sh). Starts a container from it with its
# OWN network namespace (podman's default bridge network: its 127.0.0.1 is not the
# host's, so a lab running on this machine is neither seen nor disturbed), and runs
# scripts/fresh-check-inside.sh there: apt-get install git make, git clone of the
# repository AS COMMITTED (a bundle of HEAD, mounted read-only; uncommitted changes are
# not tested), `make backup`, `make verify`, then the faults (a second `make backup`, a
# taken port, a purge and a first run again).
#
# From the host, only the package-index settings go in, read-only: /etc/pip.conf and
# the CA bundle it names (cert =), when present. Nothing else.
#
# Fails unless every step passed and `make backup` printed its sha256 line. The full
# log is .cache/fresh-check/fresh-check.log; the container is always removed.
#
# Environment:
#   LIFEBOAT_FRESH_IMAGE    image name (default localhost/lifeboat-fresh-debian12)
#   LIFEBOAT_FRESH_TIMEOUT  seconds for the whole run in the container (default 5400)
#   LIFEBOAT_IMAGE_FORCE=1  rebuild the image even when it is up to date
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
image="${LIFEBOAT_FRESH_IMAGE:-localhost/lifeboat-fresh-debian12}"
limit="${LIFEBOAT_FRESH_TIMEOUT:-5400}"
log_dir="${repo_root}/.cache/fresh-check"
log_file="${log_dir}/fresh-check.log"

log() { printf '%s fresh-check.sh: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

[[ "$(id -u)" == 0 ]] || { log "needs root (rootful podman, debootstrap)"; exit 1; }
command -v podman >/dev/null || { log "podman is missing: run bash scripts/setup.sh --test"; exit 1; }
git rev-parse --verify -q HEAD >/dev/null || { log "${repo_root} has no commit to test"; exit 1; }

# shellcheck source=scripts/podman-env.sh
source "${repo_root}/scripts/podman-env.sh"
podman info >/dev/null 2>&1 || { log "podman is not usable here (podman info failed)"; exit 1; }

total_start="$(date +%s)"
image_start="${total_start}"
LIFEBOAT_IMAGE="${image}" LIFEBOAT_IMAGE_PACKAGES="python3,ca-certificates" \
  bash "${repo_root}/scripts/build-image.sh" || { log "image build failed"; exit 1; }
image_s=$(( $(date +%s) - image_start ))
log "image ${image} ready in ${image_s}s"

mkdir -p "${log_dir}"
chmod 0700 "${repo_root}/.cache" "${log_dir}"
work="$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-fresh.XXXXXX")"
name="lifeboat-fresh-$(basename "${work}" | cut -d. -f2 | tr 'A-Z' 'a-z')"
cleanup() {
  podman rm -f -t 5 "${name}" >/dev/null 2>&1 || true
  rm -rf "${work}"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

commit="$(git rev-parse HEAD)"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  log "note: uncommitted changes are not tested; testing commit ${commit}"
fi
git bundle create -q "${work}/lifeboat.bundle" HEAD
git show "HEAD:scripts/fresh-check-inside.sh" > "${work}/inside.sh"
chmod 0755 "${work}"
chmod 0644 "${work}/lifeboat.bundle" "${work}/inside.sh"

mounts=(-v "${work}:/src:ro")
if [[ -f /etc/pip.conf ]]; then
  mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro)
  cert="$(python3 - <<'PY'
import configparser
conf = configparser.ConfigParser()
conf.read("/etc/pip.conf")
for section in ("install", "global"):
    if conf.has_option(section, "cert"):
        print(conf.get(section, "cert"))
        break
PY
)"
  if [[ -n "${cert}" && -f "${cert}" ]]; then
    mounts+=(-v "${cert}:${cert}:ro")
  fi
fi
log "mounts: ${mounts[*]}"

# Default bridge network: the container's own network namespace and loopback.
podman run -d --name "${name}" --hostname fresh-debian12 --network bridge "${mounts[@]}" \
  "${image}" /bin/sleep infinity >/dev/null
netns_host="$(readlink /proc/self/ns/net)"
netns_ctr="$(podman exec "${name}" readlink /proc/self/ns/net)"
[[ "${netns_host}" != "${netns_ctr}" ]] || { log "the container shares the host's network namespace"; exit 1; }

log "container ${name} (${image}), commit ${commit}; full log: ${log_file}"
run_start="$(date +%s)"
rc=0
timeout --kill-after=30 "${limit}" podman exec "${name}" bash /src/inside.sh > "${log_file}" 2>&1 || rc=$?
run_s=$(( $(date +%s) - run_start ))
grep -E '^[0-9:]{8} fresh-check: ' "${log_file}" >&2 || true

if (( rc != 0 )); then
  log "FAILED (rc=${rc}) after ${run_s}s; the last lines of ${log_file}:"
  tail -n 80 "${log_file}" >&2
  exit 1
fi
if ! grep -qE 'sha256: +[0-9a-f]{64}' "${log_file}" || ! grep -q 'fresh-check: ALL PASSED' "${log_file}"; then
  log "FAILED: the run ended without the backup's sha256 line or without ALL PASSED"
  exit 1
fi
log "passed: image ${image_s}s, fresh machine run ${run_s}s, total $(( $(date +%s) - total_start ))s"
