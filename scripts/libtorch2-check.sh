#!/usr/bin/env bash
# Source compatibility with LibTorch 2.x: compiles every translation unit of src/, tests/ and
# bench/ with -fsyntax-only against the libtorch headers of the Python torch found on the machine
# (the GPU machine's torch 2.x), once per C++ standard in STDS (default "c++17 c++20").
# The other libraries' headers come from HEADERS (default .gpu/sysroot/usr/include, unpacked from
# the sysroot `scripts/gpu.sh pack` makes; `--pack` runs it) and the generated version header
# from .gpu/generated.
# Writes a summary, and each failing unit's first errors, to $OUT (or ./libtorch2-check).
set -uo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
  echo "Usage: scripts/libtorch2-check.sh [--pack]   (env: OUT, HEADERS, STDS, UNITS, PYTHON)"
  exit 0
fi
cd "$(dirname "$0")/.."
if [[ "${1:-}" == --pack ]]; then
  exec scripts/gpu.sh pack
fi
[[ -d .gpu/sysroot || ! -f .gpu/sysroot.tar.xz ]] || tar -C .gpu -xJf .gpu/sysroot.tar.xz
out=${OUT:-libtorch2-check}
mkdir -p "$out"
torch_dir=$(${PYTHON:-python3} -c 'import os, torch; print(os.path.dirname(torch.__file__))') || exit 1
{
  echo "torch $(${PYTHON:-python3} -c 'import torch; print(torch.__version__, torch.version.cuda)')"
  g++ --version | head -1
  nvidia-smi -L 2>/dev/null
} | tee "$out/summary.txt"
headers=${HEADERS:-.gpu/sysroot/usr/include}
units=${UNITS:-$(ls src/kiln/*/*.cpp src/*.cpp tests/*/*.cpp bench/*.cpp 2>/dev/null)}
export torch_dir headers out
check() {  # std unit
  local log="$out/$1-$(echo "$2" | tr / _).log"
  if g++ -std="$1" -fsyntax-only -Wno-deprecated-declarations -DSPDLOG_FMT_EXTERNAL \
      -D_GLIBCXX_USE_CXX11_ABI=1 -DKILN_SOURCE_DIR_DEFAULT='"."' \
      -DKILN_BINARY_DEFAULT='"build/kiln"' -Isrc -Itests -I.gpu/generated -isystem "$headers" \
      -isystem "$headers/postgresql" \
      -isystem "$torch_dir/include" -isystem "$torch_dir/include/torch/csrc/api/include" \
      "$2" 2> "$log"; then
    rm -f "$log"; echo "ok $1 $2"
  else
    head -c 4000 "$log" > "$log.head"; mv "$log.head" "$log"; echo "FAIL $1 $2"
  fi
}
export -f check
for std in ${STDS:-c++17 c++20}; do
  for u in $units; do echo "$std $u"; done
done | xargs -P "$(nproc)" -n 2 bash -c 'check "$0" "$1"' > "$out/results.txt"
sort "$out/results.txt" -o "$out/results.txt"
for std in ${STDS:-c++17 c++20}; do
  echo "$std: $(grep -c "^ok $std " "$out/results.txt") ok, $(grep -c "^FAIL $std " "$out/results.txt") failed" \
    | tee -a "$out/summary.txt"
done
grep '^FAIL' "$out/results.txt" | head -40 | tee -a "$out/summary.txt"
# The failing units' logs are many; gather the first errors in one file.
grep -h -m3 'error' "$out"/*.log 2>/dev/null | sort | uniq -c | sort -rn | head -60 \
  > "$out/errors.txt"
rm -f "$out"/*.log
true
