#!/usr/bin/env bash
# Make a local stand-in for the platform's Node.js build image (`node:<major>`), for machines without
# a container registry: a Debian bookworm rootfs with python3 and ca-certificates only (no pip, no
# ensurepip, no python3-venv), plus this machine's own Node.js and npm copied in. Imported into
# podman's local storage as localhost/vip-skeleton-node-standin:<major>.
#
#   tests/platform/make-node-image.sh          prints the tag on stdout when it is ready
#
# Cache: an existing image is left alone (FORCE=1 rebuilds); debootstrap takes about 90 s.
# Needs root, podman, debootstrap (tests/container/setup-podman.sh installs them) and a Node.js 20 or
# 22 on this machine (the platform's supported majors); exits non-zero with the reason otherwise.
set -euo pipefail

log() { printf 'make-node-image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=../container/stand-in-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../container/stand-in-lib.sh"

command -v podman >/dev/null || die "podman not found (run tests/container/setup-podman.sh)"
command -v node >/dev/null || die "node not found on this machine (its Node.js is copied into the image)"
major=$(node -p 'process.versions.node.split(".")[0]')
case "$major" in 20|22) ;; *) die "this machine's Node.js is $(node --version); the platform runs 20 or 22";; esac
TAG=localhost/vip-skeleton-node-standin:$major

if [ "${FORCE:-0}" = 1 ]; then podman rmi -f "$TAG" >/dev/null 2>&1 || true; fi
if podman image exists "$TAG"; then
  log "present: $TAG (cached)"
  echo "$TAG"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root"
node_bin=$(readlink -f "$(command -v node)")
npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)  # .../node_modules/npm
[ -f "$npm_dir/bin/npm-cli.js" ] || die "cannot find npm's package directory (got $npm_dir)"

start=$SECONDS
rootfs=$(debian_rootfs bookworm python3,ca-certificates)  # python3 only: no pip, no venv package
trap 'rm -rf "$rootfs"' EXIT

# This machine's Node.js and npm, at the paths the official image uses (/usr/local).
install -D -m 0755 "$node_bin" "$rootfs/usr/local/bin/node"
mkdir -p "$rootfs/usr/local/lib/node_modules"
cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"

# The point of this image: python3 works, pip and venv's pip bootstrap do not.
chroot "$rootfs" /usr/local/bin/node --version >/dev/null || die "node does not run in the rootfs"
chroot "$rootfs" python3 -c 'import sys; assert sys.version_info >= (3, 11)' || die "python3 too old"
if chroot "$rootfs" python3 -m pip --version >/dev/null 2>&1; then die "pip is present in the rootfs"; fi
if chroot "$rootfs" python3 -m venv /tmp/probe >/dev/null 2>&1; then die "venv with pip works in the rootfs"; fi

rm -rf "$rootfs/tmp/probe"
import_rootfs "$rootfs" "$TAG" org.vip-skeleton.stand-in=node node
log "imported $TAG in $((SECONDS - start)) s"
echo "$TAG"
