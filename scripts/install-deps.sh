#!/usr/bin/env bash
# Installs the Debian 12 packages Kiln builds and runs with, only when some are missing.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev libgloo-dev libopenblas0-openmp
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libssl-dev zlib1g-dev libsqlite3-dev libxxhash-dev libpng-dev libjpeg62-turbo-dev
  libgtest-dev libgmock-dev
  wrk prometheus chromium fonts-dejavu-core
  dataset-fashion-mnist python3-numpy python3-torch python3-torchvision python3-sklearn
  python3-optuna python3-scipy python3-fastapi python3-uvicorn
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
