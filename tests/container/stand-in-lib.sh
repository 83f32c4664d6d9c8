# Shared by make-base-image.sh and make-node-image.sh, which source this file: a minimal Debian root
# file system made with debootstrap, and its import into podman's local storage as a stand-in image
# (for machines without a container registry). Both functions log through the caller's `log`.

# debian_rootfs SUITE PACKAGES: debootstrap a minbase SUITE with PACKAGES (comma-separated) into a
# new temporary directory, trusting this machine's extra CAs; prints the directory's path.
debian_rootfs() {
  local suite=$1 packages=$2 rootfs mirror
  command -v debootstrap >/dev/null || { log "debootstrap missing (run tests/container/setup-podman.sh)"; return 1; }
  rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/stand-in-rootfs.XXXXXX")
  # Same mirror apt uses on this machine (deb822 sources first, classic list as fallback).
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  mirror=${MIRROR:-${mirror:-http://deb.debian.org/debian}}
  log "debootstrap $suite from $mirror with $packages (about 90 s)"
  if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1; then
    tail -n 30 "$rootfs.log" >&2
    rm -rf "$rootfs" "$rootfs.log"
    return 1
  fi
  rm -f "$rootfs.log"
  # Trust the host's extra CAs (traffic may be TLS-intercepted), so builds reach the package index.
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
  echo "$rootfs"
}

# import_rootfs ROOTFS TAG LABEL CMD: drop apt's caches and logs from ROOTFS, then import it into
# podman as TAG with PATH and LANG set as in the official images, LABEL (key=value) and CMD.
import_rootfs() {
  local rootfs=$1 tag=$2 label=$3 cmd=$4
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log
  tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL $label" \
    --change "CMD [\"$cmd\"]" \
    - "$tag" >/dev/null
}
