#!/usr/bin/env bash
# Run the platform's own preflight checker (npm @automattic/vip-go-preflight-checks, "harmonia")
# against a project, with the stand-in `docker` beside this script, which starts the project natively
# with `npm start` (no Docker engine needed). harmonia's npm, git, health-check and application-health
# suites run unchanged; its Docker build is skipped (`--docker-image`), so build the project first:
#
#   npm install --production && npm run build      (in PROJECT_DIR, a git repository)
#   tests/platform/run-preflight.sh PROJECT_DIR RESULTS_JSON [NODE_MAJOR]
#
# harmonia's console output goes to stdout, its results as JSON to RESULTS_JSON.
# Exit status: harmonia's; 3 when the checker cannot be installed from the npm registry.
# The checker is installed once into $VIP_PREFLIGHT_CACHE (default ~/.cache/vip-skeleton/...).
set -uo pipefail
VERSION=2.0.19
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "${1:?usage: run-preflight.sh PROJECT_DIR RESULTS_JSON [NODE_MAJOR]}" && pwd) || exit 2
results=${2:?usage: run-preflight.sh PROJECT_DIR RESULTS_JSON [NODE_MAJOR]}
node_major=${3:-20}
tool=${VIP_PREFLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vip-skeleton/preflight-$VERSION}

command -v npm >/dev/null || { echo "run-preflight: npm not found" >&2; exit 3; }
if [ ! -x "$tool/node_modules/.bin/harmonia" ]; then
  echo "run-preflight: installing @automattic/vip-go-preflight-checks@$VERSION into $tool" >&2
  mkdir -p "$tool"
  if ! (cd "$tool" && { [ -f package.json ] || npm init -y >/dev/null; } &&
        npm install --no-audit --no-fund --loglevel=error \
          "@automattic/vip-go-preflight-checks@$VERSION" >&2); then
    echo "run-preflight: cannot install the checker from the npm registry" >&2
    exit 3
  fi
fi

state=$(mktemp -d "${TMPDIR:-/tmp}/preflight-state.XXXXXX")
stop_app() {
  if [ -f "$state/app.pid" ]; then
    kill -TERM -- "-$(cat "$state/app.pid")" 2>/dev/null
    for _ in $(seq 50); do kill -0 -- "-$(cat "$state/app.pid")" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$(cat "$state/app.pid")" 2>/dev/null
  fi
  rm -rf "$state"
}
trap stop_app EXIT
export HARM_PROJECT=$project HARM_STATE=$state PATH="$here:$PATH" FORCE_COLOR=0 NO_COLOR=1
cd "$project" || exit 2
timeout 300 "$tool/node_modules/.bin/harmonia" --docker-image vip-standin:latest \
  --node-version "$node_major" --wait 3000 --site 1 --output "$results"
status=$?
echo "--- app output (docker logs) ---"
cat "$state/app.log" 2>/dev/null
exit $status
