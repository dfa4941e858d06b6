#!/usr/bin/env bash
# `kiln test` with the default suite on the Fashion-MNIST bundle (issue 15 target: <= 30 s on 2
# cores): wall time of the whole command (process start, module and 10,000 test images loaded,
# every check, kiln serve started and stopped for the serve check) for RUNS runs (default 3), and
# each check's own seconds from the last run's report. The default suite and the example suite.
# Usage: bench/model_test_bench.sh [BUNDLE]   (default: $KILN_HOME/runs/fashion-mnist-demo/bundle,
#        what `make demo` trains; BUILD_DIR overrides the build directory)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
RUNS=${RUNS:-3}
export KILN_HOME=${KILN_HOME:-$HOME/.kiln}
bundle=${1:-$KILN_HOME/runs/fashion-mnist-demo/bundle}
[ -f "$bundle/manifest.json" ] || { echo "no bundle at $bundle (run make demo, or give one)"; exit 2; }
cmake -S . -B "$BUILD_DIR" -G Ninja >/dev/null
ninja -C "$BUILD_DIR" kiln >/dev/null
source bench/lib.sh
print_machine
tmp=$(mktemp -d /tmp/kiln-test-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

for suite in default examples/fashion-mnist/suite.yaml; do
  args=("$bundle" --quiet --report "$tmp/report.json")
  [ "$suite" != default ] && args+=(--suite "$suite")
  for i in $(seq 1 "$RUNS"); do
    start=$(date +%s.%N)
    "$BUILD_DIR/kiln" test "${args[@]}" >/dev/null || echo "(exit $?)"
    end=$(date +%s.%N)
    awk -v s="$suite" -v i="$i" -v a="$start" -v b="$end" 'BEGIN { printf "%s run %d: %.1f s wall\n", s, i, b - a }'
  done
  /usr/bin/python3 - "$tmp/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  {r['rows']} rows, checks {r['counts']}, suite time {r['seconds']:.1f} s:")
for c in r["checks"]:
    print(f"    {c['name']:<24} {c['result']:<12} {c['seconds']:6.2f} s  {c['measured']}")
PY
done
