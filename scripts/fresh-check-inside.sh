#!/usr/bin/env bash
# Run by scripts/fresh-check.sh INSIDE a fresh minimal Debian 12 container (as root,
# its own network namespace): what a new user does, then the faults the issue names.
# Not for a developer machine: it stops, breaks and purges the lab it makes.
#
#   /src/lifeboat.bundle   the repository as committed (read-only mount)
#
# Every check prints one "fresh-check: ..." line; the first failed check exits 1.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
LOGS=/root/fresh-logs
mkdir -p "${LOGS}"

say() { printf '%s fresh-check: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() { say "FAILED: $*"; exit 1; }

# run NAME TIMEOUT CMD...: the command's output goes to the terminal and to $LOGS/NAME.log.
run() {
  local name="$1" limit="$2" start rc=0
  shift 2
  start="$(date +%s)"
  say "step ${name}: $*"
  timeout --kill-after=30 "${limit}" "$@" > >(tee "${LOGS}/${name}.log") 2>&1 || rc=$?
  sleep 0.2   # let tee finish writing
  say "step ${name}: rc=${rc} in $(( $(date +%s) - start ))s"
  return "${rc}"
}

# The first recap line of a log: ok changed unreachable failed.
first_recap() {
  grep -m1 -E '^localhost +: ok=' "$1" | sed -E 's/.*ok=([0-9]+) +changed=([0-9]+) +unreachable=([0-9]+) +failed=([0-9]+).*/\1 \2 \3 \4/'
}

# --- 0. what the README asks for before the two commands: git and make -------------------
run apt 600 bash -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends git make' \
  || fail "apt-get install git make"
run clone 120 git clone -q /src/lifeboat.bundle /root/lifeboat || fail "git clone of the bundle"
cd /root/lifeboat
say "testing commit $(git rev-parse HEAD)"

# --- 1. the README's first command on a machine that never ran Lifeboat ------------------
run backup 2400 make backup || fail "make backup (first run) exited non-zero: see above"
grep -qE 'sha256: +[0-9a-f]{64}' "${LOGS}/backup.log" || fail "make backup printed no sha256 line"
say "make backup printed: $(grep -m1 -oE 'sha256: +[0-9a-f]{64}' "${LOGS}/backup.log")"

# --- 2. make verify --------------------------------------------------------------------------
run verify 1200 make verify || fail "make verify exited non-zero: see above"

# --- 3. make backup again: quick, and the lab is not rebuilt ---------------------------------
run backup-again 1200 make backup || fail "make backup (second run) exited non-zero"
grep -q 'setup.sh: installing' "${LOGS}/backup-again.log" && fail "the second make backup installed packages again"
grep -qE 'sha256: +[0-9a-f]{64}' "${LOGS}/backup-again.log" || fail "the second make backup printed no sha256 line"
read -r ok changed unreachable failed <<< "$(first_recap "${LOGS}/backup-again.log")"
[[ "${changed}" == 0 && "${failed}" == 0 && "${unreachable}" == 0 ]] \
  || fail "the second make backup changed the lab (lab play: ok=${ok} changed=${changed} failed=${failed})"
say "second make backup: lab play ok=${ok} changed=0 (nothing rebuilt)"

# --- 4. a port the lab needs is taken by something else --------------------------------------
run lab-down 300 make lab-down || fail "make lab-down"
python3 -m http.server --bind 127.0.0.1 55433 >/dev/null 2>&1 &
squatter=$!
for _ in $(seq 1 50); do
  (exec 3<>/dev/tcp/127.0.0.1/55433) 2>/dev/null && break
  sleep 0.2
done
if run lab-port-taken 600 make lab; then
  kill "${squatter}"
  fail "make lab succeeded although port 55433 was taken"
fi
kill "${squatter}"; wait "${squatter}" 2>/dev/null || true
tr -s ' \n' ' ' < "${LOGS}/lab-port-taken.log" | grep -q "port 55433 is in use by pid ${squatter} (python3 -m http.server" \
  || fail "make lab did not name port 55433 and the process (pid ${squatter}, python3 -m http.server)"
say "a taken port: make lab failed naming port 55433 and pid ${squatter} (python3 -m http.server)"

# --- 5. what `CI=true make test` does first: purge (also when nothing is left), then a first run
run lab-purge 600 make lab-purge || fail "make lab-purge"
for left in /var/lib/postgresql/lifeboat-lab-pg18 /usr/local/lib/lifeboat-lab /etc/postgresql/15/lifeboat \
            /var/lib/postgresql/15/lifeboat /etc/postgresql/15/supabase /var/lib/postgresql/15/supabase .lab; do
  [[ ! -e "${left}" ]] || { ls -laR "${left}" | head -20; fail "make lab-purge left ${left} behind"; }
done
run lab-purge-again 600 make lab-purge || fail "make lab-purge with nothing to purge"
run lab-after-purge 1200 make lab || fail "make lab after make lab-purge"
grep -A2 'Initialise the PostgreSQL 18 data directory' "${LOGS}/lab-after-purge.log" | grep -q '^changed:' \
  || fail "make lab after the purge did not take the first-run path (no initdb)"
say "purged lab rebuilt from nothing"

say "ALL PASSED"
