#!/usr/bin/env bash
# Installs the Debian 12 packages Kiln builds and runs with, only when some are missing.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git xz-utils
  libtorch-dev libgloo-dev libopenblas0-openmp
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libssl-dev zlib1g-dev libsqlite3-dev libxxhash-dev libpng-dev libjpeg62-turbo-dev libonnx-dev
  libpqxx-dev postgresql
  libgtest-dev libgmock-dev
  wrk prometheus chromium fonts-dejavu-core nginx
  openssh-server openssh-client
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

# Node.js packages the tests and benchmarks run, each directory pinned by its lock file:
# tools/onnxruntime (ONNX Runtime, runs the graphs `kiln export --format onnx` writes; its install
# script only fetches GPU providers, unreachable here: the CPU library ships inside the package)
# and tools/kubernetes (offline validation of `kiln deploy k8s` manifests against the API schemas).
root="$(cd "$(dirname "$0")/.." && pwd)"
for dir in "$root/tools/onnxruntime" "$root/tools/kubernetes"; do
  if [ ! -d "$dir/node_modules" ] ||
     ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"; then
    echo "installing $(basename "$dir")'s Node.js packages (npm ci in ${dir#$root/})"
    (cd "$dir" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts --no-audit --no-fund \
       --loglevel=error)
    cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
  fi
done
