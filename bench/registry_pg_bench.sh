#!/usr/bin/env bash
# PostgreSQL registry benchmark (issue 19 targets): 4 concurrent `kiln registry push` processes x
# 25 pushes each (gap-free numbering checked, wall time), then in-process push and warm
# NAME@ALIAS resolve latency (registry_bench), each on a throwaway PostgreSQL 15 (Debian's, as
# the postgres user, a temp data directory, a free loopback port, default durability: fsync on)
# beside the SQLite registry in the same run. Prints the machine first.
# BUILD_DIR overrides the build directory; PUSHERS / PUSHES change the 4 x 25.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PUSHERS=${PUSHERS:-4}
PUSHES=${PUSHES:-25}
cmake -S . -B "$BUILD_DIR" -G Ninja >/dev/null
ninja -C "$BUILD_DIR" registry_bench kiln
source bench/lib.sh
print_machine
kiln="$(pwd)/$BUILD_DIR/kiln"

tmp=$(mktemp -d /tmp/kiln-registry-pg-bench.XXXXXX)
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$tmp"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  as_pg "$bin/pg_ctl" -D "$tmp/pg" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
as_pg "$bin/initdb" -D "$tmp/pg" -U postgres -A trust -E UTF8 --locale=C >/dev/null
as_pg "$bin/pg_ctl" -D "$tmp/pg" -o "-p $port -k $tmp -c listen_addresses=127.0.0.1" \
  -l "$tmp/pg.log" -w start >/dev/null
echo "postgresql: $("$bin/postgres" --version), 127.0.0.1:$port, fsync on"
createdb() {
  as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE $1" postgres
  echo "postgresql://postgres@127.0.0.1:$port/$1"
}

# A real bundle: the breast-cancer quick path.
export KILN_HOME="$tmp/train"
"$kiln" train --data ../shared/datasets/breast_cancer.csv --target diagnosis --out "$tmp/run" \
  >/dev/null 2>&1
bundle="$tmp/run/bundle"

concurrent_pushes() {  # $1: label, $2: KILN_REGISTRY value, $3: KILN_HOME
  local start end
  start=$(date +%s%N)
  for p in $(seq 1 "$PUSHERS"); do
    (for i in $(seq 1 "$PUSHES"); do
       KILN_REGISTRY="$2" KILN_HOME="$3" "$kiln" registry push "$bundle" --name cancer \
         --tag "pusher=$p" >/dev/null || echo "push failed (pusher $p)" >&2
     done) &
  done
  wait
  end=$(date +%s%N)
  KILN_REGISTRY="$2" KILN_HOME="$3" "$kiln" registry list cancer --json > "$tmp/list.json"
  python3 - "$1" "$PUSHERS" "$PUSHES" "$(( (end - start) / 1000000 ))" "$tmp/list.json" <<'PY'
import json, sys
label, pushers, pushes, ms, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
versions = [v["version"] for v in json.load(open(path))]
n = pushers * pushes
gap_free = versions == list(range(1, n + 1))
print(f"{label}: {pushers} processes x {pushes} pushes: {len(versions)} versions, "
      f"gap-free 1..{n}: {'yes' if gap_free else 'NO ' + str(versions)}, wall {ms} ms "
      f"({ms / n:.1f} ms per push, each a whole kiln process)")
PY
}
echo
echo "command: PUSHERS=$PUSHERS PUSHES=$PUSHES bench/registry_pg_bench.sh"
concurrent_pushes "postgresql" "$(createdb concurrent)" "$tmp/pg-home"
concurrent_pushes "sqlite    " "sqlite" "$tmp/sqlite-home"

echo
echo "in-process (registry_bench --pushes 20 --resolves 20000), postgresql:"
"$BUILD_DIR/bench/registry_bench" --root "$tmp/api-pg" --catalogue "$(createdb api)"
echo
echo "in-process, sqlite:"
"$BUILD_DIR/bench/registry_bench" --root "$tmp/api-sqlite" --catalogue sqlite
