# Sourced by the scripts that run podman (molecule.sh, fresh-check.sh): this
# machine's podman facts. crun fails on its cgroup setup, and rlimits above 4096
# cannot be raised. Writes .cache/podman/containers.conf and exports
# CONTAINERS_CONF, unless the operator set their own CONTAINERS_CONF.
# Needs: repo_root set by the caller.
if [[ -z "${CONTAINERS_CONF:-}" ]]; then
  mkdir -p "${repo_root}/.cache/podman"
  cat > "${repo_root}/.cache/podman/containers.conf" <<'CONF'
# Written by scripts/podman-env.sh
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF="${repo_root}/.cache/podman/containers.conf"
fi
