#!/usr/bin/env bash
# The demo as a newcomer runs it: a fresh clone, an empty uv cache (every package downloaded) and an empty asrtune
# cache (nothing synthesized or encoded before), each line of `dvc repro`'s output stamped with the time.
#   benchmarks/cold_demo.sh [REPO] [WORKDIR]     (defaults: this repository, a new temporary directory)
set -uo pipefail
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
work=${2:-$(mktemp -d)}
git clone -q "$repo" "$work/clone" && cd "$work/clone" || exit 1
export UV_CACHE_DIR="$work/uv-cache" ASRTUNE_CACHE="$work/asrtune-cache"
start=$(date +%s)
echo "start $(date +%T) at $(git rev-parse --short HEAD) in $work"
python3 -m pip install -q uv
timed=(); [ -x /usr/bin/time ] && timed=(/usr/bin/time -v)  # peak memory too, where GNU time is installed
"${timed[@]}" uv run --locked --compile-bytecode --extra demo dvc repro 2>&1 | python3 -u -c '
import sys, time
for line in sys.stdin:
    sys.stdout.write(time.strftime("%H:%M:%S ") + line)'
echo "end $(date +%T): $(( $(date +%s) - start )) s"
