# Shared by the bench/*.sh scripts (sourced, not run): prints the machine and the moment a
# benchmark ran, so every figure in docs/benchmarks.md carries them.
print_machine() {
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit:  $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  echo "cpu:     $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average before the run)"
}

# A free loopback TCP port, and a / b to two decimals (PYTHON: another interpreter).
free_port() { "${PYTHON:-/usr/bin/python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ratio() { "${PYTHON:-/usr/bin/python3}" -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }

# Background processes a script appends to `pids` are stopped (continued first, should the script
# have stopped one), and $KILN_HOME removed, when it exits: `trap stop_background_and_clean EXIT`.
pids=()
stop_background_and_clean() {
  for p in "${pids[@]}"; do
    kill -CONT "$p" 2>/dev/null || true
    kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$KILN_HOME"
}

# Waits until `kiln serve` (pid $3) printed "ready on" into $1; exits the script with its stderr
# ($2) when it died first.
wait_serve_ready() {
  until grep -q "ready on" "$1" 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || { cat "$2"; exit 1; }
    sleep 0.01
  done
}

# The start of a benchmark that trains: builds kiln and kiln-engine in $BUILD_DIR, prints the
# machine, and gives the script a fresh KILN_HOME in `work` (removed at exit) and `kiln`, the
# binary. $1 names the temp directory (/tmp/kiln-$1-bench-XXXXXX).
start_training_bench() {
  cmake --build "$BUILD_DIR" --target kiln kiln-engine >/dev/null
  print_machine
  work=$(mktemp -d "/tmp/kiln-$1-bench-XXXXXX")
  export KILN_HOME=$work
  trap 'rm -rf "$work"' EXIT
  kiln="$BUILD_DIR/kiln"
}
