#!/usr/bin/env bash
# Kiln on the GPU machine (torch 2.x + CUDA from pip, no apt, no network), in two halves:
#
#   scripts/gpu.sh pack      HERE (Debian 12): collects into .gpu/ (git-ignored, carried to the
#                            device) a sysroot of every library Kiln builds against except
#                            LibTorch (headers, CMake packages, the shared libraries and what they
#                            load, from Debian's -dev packages), the Fashion-MNIST files, the
#                            shared CSVs and the Python peers.
#   scripts/gpu.sh all       THERE, in one device call: build + test + bench (each below), logs
#                            and results to $OUT (or .gpu/out).
#   scripts/gpu.sh build     THERE: configures against the machine's LibTorch
#                            (torch.utils.cmake_prefix_path) and the sysroot, builds kiln,
#                            kiln-engine and the test binaries into build-gpu/.
#   scripts/gpu.sh test      THERE: the gpu-labelled tests (ctest -L gpu) and the --device e2e
#                            tests, which run on the GPU when one is there.
#   scripts/gpu.sh bench     THERE: bench/gpu_bench.sh (Kiln vs the PyTorch peer on the GPU).
#
# A device call, e.g.: run(command="scripts/gpu.sh all", carry=[".gpu"], timeout_s=600).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
sysroot=$root/.gpu/sysroot
out=${OUT:-$root/.gpu/out}
arch=x86_64-linux-gnu

# Debian's development packages Kiln builds against (LibTorch aside).
dev_packages=(libcli11-dev libfmt-dev libgmock-dev libgtest-dev libjpeg62-turbo-dev libonnx-dev
  libpng-dev libpq-dev libpqxx-dev libprotobuf-dev libspdlog-dev libsqlite3-dev libssl-dev
  libxxhash-dev libyaml-cpp-dev nlohmann-json3-dev zlib1g-dev)

# The C and C++ runtimes every Linux has (a newer one there serves our older builds).
is_base_library() {
  case "$(basename "$1")" in
    libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | libresolv.so* | ld-linux* | \
      libstdc++.so* | libgcc_s.so* | linux-vdso*) return 0 ;;
  esac
  return 1
}

pack() {
  rm -rf .gpu && mkdir -p "$sysroot"
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >>.git/info/exclude
  # Headers, CMake packages and link-time libraries of the -dev packages, paths kept.
  for package in "${dev_packages[@]}"; do
    dpkg -L "$package" | grep -E "^/usr/(include|lib|share/cmake)/" |
      grep -Ev '\.(la|pc)$|/pkgconfig/|/doc/' |
      grep -Ev "/lib(jpeg|png|png16|pq|pqxx|protobuf|protobuf-lite|protoc|onnxifi_loader|z|crypto|ssl|sqlite3|yaml-cpp|spdlog|fmt)\.a$"
  done | while read -r file; do
    [[ -f "$file" || -L "$file" ]] || continue
    mkdir -p "$sysroot$(dirname "$file")"
    cp -P "$file" "$sysroot$file"
  done
  # Files the CMake packages' imported targets name, wherever their package put them.
  grep -rhoE '\$\{_IMPORT_PREFIX\}/lib/[^"]+' "$sysroot"/usr/lib/$arch/cmake | sort -u |
    while read -r ref; do
      local file=/usr${ref#\$\{_IMPORT_PREFIX\}}
      [[ -e "$sysroot$file" || ! -e "$file" ]] && continue
      mkdir -p "$sysroot$(dirname "$file")"
      cp -P "$file" "$sysroot$file"
    done
  # The shared libraries those link names point at, and everything they load in turn.
  local -a queue=()
  while read -r link; do
    queue+=("$(readlink -f "${link#"$sysroot"}")")
  done < <(find "$sysroot/usr/lib" -name '*.so*')
  declare -A seen=()
  while ((${#queue[@]})); do
    local lib=${queue[0]}
    queue=("${queue[@]:1}")
    [[ -n "${seen[$lib]:-}" ]] && continue
    seen[$lib]=1
    is_base_library "$lib" && continue
    # Every name the library is known by (libfoo.so.1 -> libfoo.so.1.2.3).
    for name in /usr/lib/$arch/"$(basename "$lib" | sed 's/\.so\..*/.so/')"*; do
      [[ "$(readlink -f "$name")" == "$lib" ]] && cp -P "$name" "$sysroot/usr/lib/$arch/"
    done
    while read -r needed; do queue+=("$(readlink -f "$needed")"); done < <(ldd "$lib" |
      awk '$3 ~ /^\// {print $3}')
  done
  # Data and peers the tests and benchmarks read.
  mkdir -p .gpu/fashion-mnist .gpu/shared
  cp /usr/share/datasets/fashion-mnist/*.gz .gpu/fashion-mnist/
  cp -r ../shared/datasets ../shared/peers .gpu/shared/
  cp -r "${BUILD_DIR:-build}/generated" .gpu/generated  # for scripts/libtorch2-check.sh
  # The device call carries at most 64 MiB: the sysroot travels compressed (30 MB -> ~8 MB).
  du -sh "$sysroot"
  tar -C .gpu -cJf .gpu/sysroot.tar.xz sysroot && rm -rf "$sysroot"
  du -sh .gpu .gpu/*
}

# The environment of the steps run there.
device_environment() {
  [[ -d "$sysroot" ]] || tar -C .gpu -xJf .gpu/sysroot.tar.xz
  export LD_LIBRARY_PATH=$sysroot/usr/lib/$arch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export KILN_FASHION_MNIST_DIR=$root/.gpu/fashion-mnist
  # The tests read ../shared/datasets beside the checkout, as here.
  if [[ ! -e ../shared/datasets ]]; then
    mkdir -p ../shared && cp -r .gpu/shared/datasets .gpu/shared/peers ../shared/
  fi
  mkdir -p "$out"
}

build() {
  device_environment
  torch_prefix=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
  {
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
    nvidia-smi -L || true
    g++ --version | head -1
    cmake --version | head -1
  } | tee "$out/machine.txt"
  configure_and_build "${KILN_ONNX:-ON}"
  # Debian's libprotobuf (ONNX export) beside the machine's LibTorch is the riskiest pairing:
  # when the engine does not start with it, build without ONNX export.
  if ! build-gpu/kiln devices --json >"$out/devices.json" 2>"$out/devices.err"; then
    echo "gpu.sh: kiln devices failed with ONNX export ($(head -c 300 "$out/devices.err")); KILN_ONNX=OFF"
    configure_and_build OFF
    build-gpu/kiln devices --json >"$out/devices.json"
  fi
  cat "$out/devices.json"
}

configure_and_build() {  # KILN_ONNX
  # Only the sysroot and LibTorch: nothing from the image's /usr may shadow what was packed.
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$sysroot/usr" \
    -DCMAKE_LIBRARY_ARCHITECTURE=$arch -DKILN_ONNX="$1" 2>&1 | tail -25 | tee "$out/configure.log"
  time cmake --build build-gpu -j"$(nproc)" --target kiln kiln-engine gpu_tests e2e_tests \
    serve_forward_bench 2>&1 | tail -40 | tee "$out/build.log"
}

run_tests() {
  device_environment
  local status=0
  (cd build-gpu && ctest -L gpu --output-on-failure --timeout 300) 2>&1 | tee "$out/gpu_tests.log" ||
    status=1
  KILN_SOURCE_DIR=$root KILN_BINARY=$root/build-gpu/kiln \
    build-gpu/tests/e2e/e2e_tests --gtest_filter='DeviceCli*' 2>&1 | tee "$out/device_e2e.log" ||
    status=1
  return $status
}

bench() {
  device_environment
  KILN=$root/build-gpu/kiln bench/gpu_bench.sh 2>&1 | tee "$out/gpu_bench.log"
}

case "${1:-}" in
  pack) pack ;;
  build) build ;;
  test) run_tests ;;
  bench) bench ;;
  all)
    build
    run_tests || echo "gpu.sh: some tests failed (see $out)"
    bench
    ;;
  *)
    sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
    ;;
esac
