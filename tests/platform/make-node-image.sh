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

command -v debootstrap >/dev/null || die "debootstrap not found (run tests/container/setup-podman.sh)"
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
node_bin=$(readlink -f "$(command -v node)")
npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)  # .../node_modules/npm
[ -f "$npm_dir/bin/npm-cli.js" ] || die "cannot find npm's package directory (got $npm_dir)"

rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/node-standin-rootfs.XXXXXX")
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
mirror=${MIRROR:-${mirror:-http://deb.debian.org/debian}}
log "debootstrap bookworm from $mirror: python3 and ca-certificates only (about 90 s)"
start=$SECONDS
debootstrap --variant=minbase --include=python3,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }

# This machine's Node.js and npm, at the paths the official image uses (/usr/local).
install -D -m 0755 "$node_bin" "$rootfs/usr/local/bin/node"
mkdir -p "$rootfs/usr/local/lib/node_modules"
cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"

# Trust this machine's extra CAs (traffic may be TLS-intercepted), so the build reaches the index.
cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$rootfs" update-ca-certificates >/dev/null 2>&1

# The point of this image: python3 works, pip and venv's pip bootstrap do not.
chroot "$rootfs" /usr/local/bin/node --version >/dev/null || die "node does not run in the rootfs"
chroot "$rootfs" python3 -c 'import sys; assert sys.version_info >= (3, 11)' || die "python3 too old"
if chroot "$rootfs" python3 -m pip --version >/dev/null 2>&1; then die "pip is present in the rootfs"; fi
if chroot "$rootfs" python3 -m venv /tmp/probe >/dev/null 2>&1; then die "venv with pip works in the rootfs"; fi

chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log "$rootfs/tmp/probe"
tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'LABEL org.vip-skeleton.stand-in=node' \
  --change 'CMD ["node"]' \
  - "$TAG" >/dev/null
log "imported $TAG in $((SECONDS - start)) s"
echo "$TAG"
