#!/usr/bin/env bash
# Data-parallel training benchmark (issue 19): the default Fashion-MNIST CNN
# (examples/fashion-mnist/cnn.yaml: 7 epochs, batch 256, one-cycle) trained by one process on all
# cores and by `kiln train --nproc 2` (two ranks, threads = cores / 2, Gloo all-reduce over
# loopback), same config and seed. Prints each run's test accuracy, training samples/s per epoch,
# wall time, and rank 0's all-reduce time per step (communication cost, from the run summary).
# Then the PyTorch DDP peer (bench/py_ddp_peer.py) in the same run.
# Usage: bench/ddp_bench.sh   (BUILD_DIR=build EPOCHS=7 LIMIT=0: all 60,000 training images)
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
for nproc in 1 2; do
  echo "--- nproc $nproc"
  start=$(date +%s.%N)
  "$BUILD_DIR/kiln" train examples/fashion-mnist/cnn.yaml --out "$work/run$nproc" --nproc "$nproc" \
    "${sets[@]}" --json 2> "$work/err$nproc" > "$work/out$nproc.json"
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  grep -E "^epoch|data-parallel|^train:" "$work/err$nproc" | sed 's/^/  /'
  /usr/bin/python3 - "$work/out$nproc.json" "$wall" <<'PY'
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
echo "--- peer (PEER_EPOCHS=${PEER_EPOCHS:-2})"
/usr/bin/python3 bench/py_ddp_peer.py --epochs "${PEER_EPOCHS:-2}" | sed 's/^/  /'
