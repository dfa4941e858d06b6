#!/usr/bin/env bash
# Hyperparameter optimisation benchmarks (issue 6), Kiln beside Optuna 3.1 in one run:
#   1. sampler quality: Branin, Hartmann-6, Styblinski-Tang 4-d, Rosenbrock 4-d and a mixed
#      log-float/int/categorical toy, 100 trials x SEEDS seeds (default 30), median best value over
#      seeds 0-9 and over all; Kiln TPE (default, the previous default, Optuna-3.1-like univariate
#      and multivariate modes) and random (in process, bench/tune_sampler_bench.cpp) vs Optuna
#      TPE and random
#   2. per-trial sampling + storage overhead at 1,000 trials (SQLite studies.db)
#   3. end to end: `kiln tune --objective-cmd` on Branin (awk), 100 trials, 2 workers
#   4. (FULL=1 only, ~1.5 h of CPU) Fashion-MNIST CNN space, full data, the config's own 20-epoch
#      one-cycle schedule: ASHA (reduction factor 3, rungs after 2 and 6 epochs) vs no pruning,
#      16 trials each, 2 workers
#   5. (FULL=1 only, 1 hour) the headline run of examples/fashion-mnist/tune.yaml
#   6. held-out seeds: Kiln's default TPE and Optuna's on seeds 110-209 (none of them used to
#      choose Kiln's defaults), 100 trials, with a bootstrap interval of the difference of
#      medians and a Mann-Whitney test (bench/tune_compare.py); ~10 min
# Usage: bench/tune_bench.sh   (BUILD_DIR overrides build/; SECTIONS="4" runs only section 4,
#        default "1 3 6", FULL=1 adds 4 and 5). Needs python3-optuna and python3-scipy.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
kiln="$BUILD_DIR/kiln"
export KILN_HOME=$(mktemp -d /tmp/kiln-tune-bench-XXXXXX)
trap 'rm -rf "$KILN_HOME"' EXIT
source bench/lib.sh
print_machine

if [[ "${FULL:-0}" == 1 ]]; then SECTIONS=${SECTIONS:-1 3 6 4 5}; else SECTIONS=${SECTIONS:-1 3 6}; fi
section() { [[ " $SECTIONS " == *" $1 "* ]]; }

SEEDS=${SEEDS:-30}
if section 1; then
echo; echo "== 1-2. sampler quality (100 trials x $SEEDS seeds) and overhead at 1,000 trials"
# tpe: Kiln's default; tpe/m1: the same with Optuna's magic clip (Kiln's default until
# 2026-11-28); tpe/uni/noep/o31/m1: Optuna 3.1's univariate TPE re-implemented;
# tpe/joint/scott/noep/m1: Optuna's multivariate=True with the exact density.
"$BUILD_DIR/bench/tune_sampler_bench" --trials 100 --seeds "$SEEDS" --overhead-trials 1000 \
  --db "$KILN_HOME" --samplers tpe,tpe/m1,tpe/uni/noep/o31/m1,tpe/joint/scott/noep/m1,random
/usr/bin/python3 bench/tune_optuna_peer.py 100 "$SEEDS" "${PEER_SAMPLERS:-tpe,random}"
fi

if section 6; then
echo; echo "== 6. held-out seeds 110-209: Kiln's default TPE vs Optuna's, 100 trials"
"$BUILD_DIR/bench/tune_sampler_bench" --trials 100 --seeds 100 --first-seed 110 \
  --overhead-trials 0 --samplers tpe > "$KILN_HOME/kiln-heldout.txt"
/usr/bin/python3 bench/tune_optuna_peer.py 100 100 tpe all 110 > "$KILN_HOME/optuna-heldout.txt"
/usr/bin/python3 bench/tune_compare.py "$KILN_HOME/kiln-heldout.txt" "$KILN_HOME/optuna-heldout.txt"
fi

if section 3; then
echo; echo "== 3. end to end: kiln tune --objective-cmd (Branin via awk), 100 trials, 2 workers"
cat > "$KILN_HOME/branin.yaml" <<'YAML'
params:
  x1: {type: float, low: -5, high: 10}
  x2: {type: float, low: 0, high: 15}
YAML
start=$(date +%s.%N)
"$kiln" tune --objective-cmd "awk 'BEGIN { pi = atan2(0, -1); b = 5.1 / (4 * pi * pi); c = 5 / pi; t = 1 / (8 * pi); y = {x2} - b * {x1}^2 + c * {x1} - 6; print y * y + 10 * (1 - t) * cos({x1}) + 10 }'" \
  --space "$KILN_HOME/branin.yaml" --trials 100 --workers 2 --direction minimize --seed 0 \
  --study branin-e2e 2>/dev/null | tail -1
end=$(date +%s.%N)
/usr/bin/python3 -c "import sys; print(f'wall {float(sys.argv[2]) - float(sys.argv[1]):.1f} s for 100 trials')" "$start" "$end"
fi

if section 4; then
  echo; echo "== 4. Fashion-MNIST CNN space, full data: ASHA vs no pruning (16 trials each, 20 epochs)"
  # The config's own one-cycle schedule peaks at epoch 5 (pct_start 0.25): the first rung (2)
  # comes before the peak, the second (6) after it; trials that reach 18 finish their 20.
  for pruner in asha none; do
    s=$(date +%s)
    "$kiln" tune examples/fashion-mnist/tune.yaml --space examples/fashion-mnist/tune-space.yaml \
      --trials 16 --workers 2 --seed 0 --pruner "$pruner" --reduction-factor 3 --min-resource 2 \
      --study "fm-$pruner" \
      2>/dev/null | tail -1
    echo "pruner $pruner: $(( $(date +%s) - s )) s"
    "$kiln" tune show "fm-$pruner" --json | /usr/bin/python3 -c "
import json, sys
s = json.load(sys.stdin)
epochs = sum(len(t.get('intermediate', {})) for t in s['trials'])
print(f\"best val_accuracy {s['best']['value']:.4f}, epochs trained {epochs}\")"
  done
fi
if section 5; then
  echo; echo "== 5. headline: examples/fashion-mnist/tune.yaml, 1 hour on 2 cores"
  # No trial starts after 45 min; the ones running then finish (a 20-epoch trial takes ~15 min
  # on one core), so the study ends within the hour. The best trial's test accuracy is the
  # "final (test)" line of its train.log (its training output is kept: --keep-trials best).
  s=$(date +%s)
  "$kiln" tune examples/fashion-mnist/tune.yaml --space examples/fashion-mnist/tune-space.yaml \
    --trials 100 --workers 2 --pruner asha --reduction-factor 3 --min-resource 2 --timeout 2700 \
    --seed 0 --study fm-headline >/dev/null 2>&1
  echo "wall $(( $(date +%s) - s )) s"
  "$kiln" tune show fm-headline --json > "$KILN_HOME/headline.json"
  /usr/bin/python3 -c "
import collections, json, sys
s = json.load(open(sys.argv[1]))
b = s['best']
print('trials by state', dict(collections.Counter(t['state'] for t in s['trials'])))
print('best val_accuracy', b['value'], 'trial', b['number'], b['params'])" "$KILN_HOME/headline.json"
  best=$(/usr/bin/python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['best']['number'])" "$KILN_HOME/headline.json")
  grep "final (test)" "$KILN_HOME/studies/fm-headline/trial-$best/train.log"
fi
