#!/usr/bin/env bash
# Builds and runs the data loader benchmark; prints the machine first. Extra arguments go to
# loader_bench (e.g. --epochs 10 --workers 2). BUILD_DIR overrides the build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja >/dev/null
ninja -C "$BUILD_DIR" loader_bench
source bench/lib.sh
print_machine
echo "command: $BUILD_DIR/bench/loader_bench $*"
"$BUILD_DIR/bench/loader_bench" "$@"

# The peer in the same run: PyTorch DataLoader + torchvision transforms, same augmentation.
if /usr/bin/python3 -c "import torch, torchvision" 2>/dev/null; then
  echo
  echo "peer:    /usr/bin/python3 bench/py_loader_peer.py 3 2   (DataLoader, 2 worker processes)"
  /usr/bin/python3 bench/py_loader_peer.py 3 2
else
  echo "peer skipped: /usr/bin/python3 lacks torch/torchvision (apt-get install python3-torchvision)"
fi
