#!/usr/bin/env bash
# CI set-up for tests/test_container.py: install and configure podman, then make the local stand-in
# base images for every python_version answer. Never fails CI: when podman cannot be set up (no apt,
# no root, no network) it prints a warning and the container tests skip with the reason.
#   tests/container/ci-setup.sh [VERSION ...]     (default: every python_version choice in copier.yml)
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

versions=("$@")
if ((${#versions[@]} == 0)); then
  # The choices of the python_version question, e.g. "3.11" "3.12" "3.13".
  mapfile -t versions < <(python3 - "$root/copier.yml" <<'PY' 2>/dev/null
import sys, yaml
print("\n".join(str(v) for v in yaml.safe_load(open(sys.argv[1]))["python_version"]["choices"]))
PY
  )
  ((${#versions[@]})) || versions=(3.11 3.12 3.13)
fi

start=$SECONDS
if ! "$here/setup-podman.sh"; then
  echo "WARNING: ci-setup: podman could not be set up; the container tests will skip" >&2
  exit 0
fi
if ! "$here/make-base-image.sh" "${versions[@]}"; then
  echo "WARNING: ci-setup: no stand-in base image; the container tests will skip" >&2
  exit 0
fi
echo "ci-setup: podman ready, base images ${versions[*]} ($((SECONDS - start)) s)" >&2
