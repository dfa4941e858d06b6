#!/usr/bin/env bash
# Data-parallel training benchmark (issue 19): the default Fashion-MNIST CNN
# (examples/fashion-mnist/cnn.yaml: 7 epochs, batch 256, one-cycle) trained by one process on all
# cores and by `kiln train --nproc 2` (two ranks, threads = cores / 2, Gloo all-reduce over
# loopback), same config and seed. Prints each run's test accuracy, training samples/s per epoch,
# wall time, and rank 0's all-reduce time per step (communication cost, from the run summary).
# ACCUMULATE=N (> 1) adds a third run: 2 ranks, batches of 256/N accumulated N to a step (the
# same 256 rows a step, all-reduced once). Then the PyTorch DDP peer (bench/py_ddp_peer.py).
# Usage: bench/ddp_bench.sh   (BUILD_DIR=build EPOCHS=7 LIMIT=0: all 60,000 training images;
#        ACCUMULATE=1; PEER_EPOCHS=2, 0: no peer)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
EPOCHS=${EPOCHS:-7}
LIMIT=${LIMIT:-0}
start_training_bench ddp
sets=(--set "epochs=$EPOCHS")
[ "$LIMIT" -gt 0 ] && sets+=(--set "data.limit=$LIMIT")
# Prepare the snapshot once, outside the timings.
"$BUILD_DIR/kiln" data prepare examples/fashion-mnist/dataset.yaml --out "$work/snapshots" > /dev/null 2>&1 || true
ACCUMULATE=${ACCUMULATE:-1}
runs=(1 2)
[ "$ACCUMULATE" -gt 1 ] && runs+=("2x$ACCUMULATE")
for run in "${runs[@]}"; do
  nproc=${run%%x*}
  extra=()
  if [ "$run" != "$nproc" ]; then
    extra=(--set "batch_size=$((256 / ACCUMULATE))" --set "accumulate_batches=$ACCUMULATE")
    echo "--- nproc $nproc, batches of $((256 / ACCUMULATE)) accumulated $ACCUMULATE to a step"
  else
    echo "--- nproc $nproc"
  fi
  start=$(date +%s.%N)
  "$BUILD_DIR/kiln" train examples/fashion-mnist/cnn.yaml --out "$work/run$run" --nproc "$nproc" \
    "${sets[@]}" "${extra[@]}" --json 2> "$work/err$run" > "$work/out$run.json"
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  grep -E "^epoch|data-parallel|^accumulate|^train:" "$work/err$run" | sed 's/^/  /'
  /usr/bin/python3 - "$work/out$run.json" "$wall" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
line = f"  test accuracy {r['test_metrics']['accuracy']:.4f}, {r['steps']} steps, wall {float(sys.argv[2]):.1f} s (train {r['seconds']:.1f} s)"
d = r.get("distributed")
if d:
    calls = d["allreduce_calls_rank0"]
    line += f"; rank 0 all-reduce {d['allreduce_seconds_rank0']:.2f} s in {calls} calls ({1000 * d['allreduce_seconds_rank0'] / max(1, r['steps']):.2f} ms per step)"
print(line)
PY
done
# The peer in the same run: PyTorch's own DistributedDataParallel (Gloo) on the peer CNN, 1 process
# x 2 threads vs 2 processes x 1 thread, global batch 256 (bench/py_ddp_peer.py).
if [ "${PEER_EPOCHS:-2}" -gt 0 ]; then
  echo "--- peer (PEER_EPOCHS=${PEER_EPOCHS:-2})"
  /usr/bin/python3 bench/py_ddp_peer.py --epochs "${PEER_EPOCHS:-2}" --accumulate "$ACCUMULATE" |
    sed 's/^/  /'
fi
