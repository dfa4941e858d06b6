#!/usr/bin/env bash
# Installs the Debian 12 packages Kiln builds and runs with, only when some are missing.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev libgloo-dev libopenblas0-openmp
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libssl-dev zlib1g-dev libsqlite3-dev libxxhash-dev libpng-dev libjpeg62-turbo-dev libonnx-dev
  libgtest-dev libgmock-dev
  wrk prometheus chromium fonts-dejavu-core nginx
  dataset-fashion-mnist python3-numpy python3-torch python3-torchvision python3-sklearn
  python3-optuna python3-scipy python3-fastapi python3-uvicorn python3-onnx nodejs npm
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm may come from another source than Debian's archive (a machine image's own
# Node.js): a working `npm` is enough, Debian's packages are installed only where there is none.
if command -v npm > /dev/null 2>&1 && command -v node > /dev/null 2>&1; then
  kept=()
  for p in "${missing[@]}"; do
    [ "$p" = nodejs ] || [ "$p" = npm ] || kept+=("$p")
  done
  missing=("${kept[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime for Node.js (runs the graphs `kiln export --format onnx` writes, in tests and
# bench/onnx_bench.sh), pinned by tools/onnxruntime/package-lock.json. Its install script only
# fetches GPU providers (unreachable here): the CPU library ships inside the package.
ort_dir="$(cd "$(dirname "$0")/.." && pwd)/tools/onnxruntime"
if [ ! -f "$ort_dir/node_modules/onnxruntime-node/package.json" ] ||
   ! cmp -s "$ort_dir/package-lock.json" "$ort_dir/node_modules/.package-lock.json.installed"; then
  echo "installing onnxruntime-node (npm ci in tools/onnxruntime)"
  (cd "$ort_dir" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts --no-audit --no-fund \
     --loglevel=error)
  cp "$ort_dir/package-lock.json" "$ort_dir/node_modules/.package-lock.json.installed"
fi
