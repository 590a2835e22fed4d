#!/usr/bin/env bash
# Build the podman base image for molecule: localhost/lifeboat-debian12.
#
# No image registry is reachable, so the image is made from scratch with
# debootstrap (minbase, Debian 12 "bookworm") from the Debian mirror this
# machine's apt already uses, then imported with `podman import`.
#
# Idempotent and cached: the image carries a label with the hash of this
# script's inputs (package list, suite, mirror, script text); when an image
# with the same hash exists, nothing is done. Force a rebuild with
# LIFEBOAT_IMAGE_FORCE=1.
#
# Environment:
#   LIFEBOAT_IMAGE          image name (default localhost/lifeboat-debian12)
#   LIFEBOAT_IMAGE_PACKAGES comma-separated --include list replacing the default one
#   LIFEBOAT_DEBIAN_MIRROR  mirror URL (default: first Debian URI of this machine's apt sources)
#   LIFEBOAT_IMAGE_FORCE    1 = rebuild even when the hash matches
#   CONTAINERS_CONF         passed through to podman (scripts/molecule.sh sets it)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${LIFEBOAT_IMAGE:-localhost/lifeboat-debian12}"
suite="bookworm"
cache_dir="${repo_root}/.cache/image/${image##*/}"

# Everything the roles' package tasks expect, so containers never need apt's network.
# LIFEBOAT_IMAGE_PACKAGES (comma-separated) replaces the list (fresh-check.sh: python3,ca-certificates).
packages=(
  python3 python3-apt python3-venv
  cron sudo logrotate procps util-linux
  ca-certificates gnupg age zstd pigz gzip tar
  postgresql-client
  # molecule/default's "db" host runs a PostgreSQL server
  postgresql-15
)
if [[ -n "${LIFEBOAT_IMAGE_PACKAGES:-}" ]]; then
  IFS=, read -r -a packages <<< "${LIFEBOAT_IMAGE_PACKAGES}"
fi

log() { printf '%s build-image: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

detect_mirror() {
  local uri
  uri="$(grep -hs -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
           | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)"
  if [[ -z "${uri}" ]]; then
    uri="$(grep -hs -E '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
             | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)"
  fi
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

mirror="${LIFEBOAT_DEBIAN_MIRROR:-$(detect_mirror)}"
include="$(IFS=,; printf '%s' "${packages[*]}")"
input_hash="$( { printf '%s\n' "${suite}" "${mirror}" "${include}"; cat "${BASH_SOURCE[0]}"; } \
               | sha256sum | cut -c1-16)"

current_hash=""
if podman image exists "${image}"; then
  current_hash="$(podman image inspect --format '{{ index .Labels "lifeboat.input-hash" }}' "${image}" 2>/dev/null || true)"
fi
if [[ "${current_hash}" == "${input_hash}" && "${LIFEBOAT_IMAGE_FORCE:-0}" != "1" ]]; then
  log "${image} is up to date (input hash ${input_hash}); nothing to do"
  exit 0
fi

for tool in debootstrap podman tar; do
  command -v "${tool}" >/dev/null || { log "missing ${tool} (run scripts/setup.sh)"; exit 1; }
done
if [[ "$(id -u)" != "0" ]]; then
  log "debootstrap and rootful podman need root"
  exit 1
fi

start="$(date +%s)"
mkdir -p "${cache_dir}/debs"
chmod 0700 "${repo_root}/.cache" "${cache_dir}" 2>/dev/null || true
rootfs="$(mktemp -d "${cache_dir}/rootfs.XXXXXX")"
cleanup() { rm -rf --one-file-system "${rootfs}"; }
trap cleanup EXIT

log "debootstrap ${suite} from ${mirror} (minbase + ${include})"
debootstrap --variant=minbase --include="${include}" \
  --cache-dir="${cache_dir}/debs" \
  "${suite}" "${rootfs}" "${mirror}" > "${cache_dir}/debootstrap.log" 2>&1 || {
    log "debootstrap failed; last lines of ${cache_dir}/debootstrap.log:"
    tail -n 30 "${cache_dir}/debootstrap.log" >&2
    exit 1
  }

# Slim the image: package caches are not needed in the containers.
rm -rf "${rootfs}/var/cache/apt/archives/"*.deb "${rootfs}/var/cache/apt/"*.bin
# Containers get their own /etc/hostname and /etc/resolv.conf from podman.
: > "${rootfs}/etc/hostname"

log "importing into podman as ${image}"
old_id="$(podman image inspect --format '{{.Id}}' "${image}" 2>/dev/null || true)"
tar --numeric-owner -C "${rootfs}" -c . \
  | podman import --quiet \
      --change 'CMD ["/bin/sleep", "infinity"]' \
      --change "LABEL lifeboat.input-hash=${input_hash}" \
      --change "LABEL lifeboat.suite=${suite}" \
      - "${image}" >/dev/null
new_id="$(podman image inspect --format '{{.Id}}' "${image}")"
if [[ -n "${old_id}" && "${old_id}" != "${new_id}" ]]; then
  podman rmi "${old_id}" >/dev/null 2>&1 || true   # dangling previous build; in use = kept
fi

log "built ${image} (input hash ${input_hash}) in $(( $(date +%s) - start ))s"
