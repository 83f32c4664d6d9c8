#!/usr/bin/env bash
# Make a local stand-in for the official python:<ver>-slim images, for machines without a container
# registry: debootstrap a Debian rootfs with python3 (+ venv, pip), import it into podman's local
# storage under the exact names an unmodified Dockerfile uses (docker.io/library/python:<ver>-slim,
# plus localhost/python:<ver>-slim).
#
#   tests/container/make-base-image.sh [VERSION ...]     (default: 3.12)
#
# Cache: a tag that already exists is left alone; missing tags are added to an existing stand-in
# (a `podman tag`, instant) and debootstrap runs only when no stand-in exists yet (~90 s).
# FORCE=1 rebuilds. The stand-in carries Debian's own Python (3.11 on bookworm) whatever the tag
# says, so Dockerfiles must never hard-code a python3.X path.
set -euo pipefail

SUITE=${SUITE:-bookworm}
LABEL=org.vip-skeleton.stand-in
log() { printf 'make-base-image: %s\n' "$*" >&2; }
# shellcheck source=stand-in-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/stand-in-lib.sh"

versions=("$@")
((${#versions[@]})) || versions=(3.12)
for v in "${versions[@]}"; do
  [[ $v =~ ^3\.[0-9]+$ ]] || { log "not a Python version: $v"; exit 2; }
done

if [ "${FORCE:-0}" = 1 ]; then
  for v in "${versions[@]}"; do
    podman rmi -f "docker.io/library/python:$v-slim" "localhost/python:$v-slim" >/dev/null 2>&1 || true
  done
fi

missing=()
for v in "${versions[@]}"; do
  for tag in "docker.io/library/python:$v-slim" "localhost/python:$v-slim"; do
    podman image exists "$tag" || missing+=("$tag")
  done
done
if ((${#missing[@]} == 0)); then
  log "present: ${versions[*]} (cached)"
  exit 0
fi

# An existing stand-in (from an earlier run, any version) can simply be tagged again. Images built
# FROM a stand-in inherit its label, so only the python:<ver>-slim names count.
source_id=$(podman images --noheading --filter "label=$LABEL=true" --format '{{.ID}} {{.Repository}}' |
  awk '$2 == "docker.io/library/python" || $2 == "localhost/python" {print $1; exit}' || true)

if [ -z "$source_id" ]; then
  start=$SECONDS
  rootfs=$(debian_rootfs "$SUITE" python3,python3-venv,python3-pip,python-is-python3,ca-certificates)
  trap 'rm -rf "$rootfs"' EXIT
  # Behave like the official image: plain `pip install` allowed; python, python3, pip in /usr/local/bin.
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python3"
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
  # The name under which the result is imported first; every other name is a tag of it.
  first=${missing[0]}
  import_rootfs "$rootfs" "$first" "$LABEL=true" python3
  source_id=$(podman image inspect --format '{{.Id}}' "$first")
  log "imported $first in $((SECONDS - start)) s"
fi

for tag in "${missing[@]}"; do
  podman image exists "$tag" || podman tag "$source_id" "$tag"
done
log "ready: $(printf '%s ' "${missing[@]}")"
