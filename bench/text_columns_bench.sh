#!/usr/bin/env bash
# What a table's columns sent as text (BYTES) cost `kiln serve` against the same rows as FP32
# numbers and category codes. breast_cancer.csv gets a text column "site"; an MLP bundle trained on
# it is served on one core (`taskset -c 1`, --threads 1) and saturated by `kiln loadtest` closed
# loop (16 connections) on the other, with one body of BATCH rows in each form (the same rows,
# predictions equal). FP32 and BYTES alternate ROUNDS times (default 3); medians of the achieved
# rate and of the server's CPU time per request, and their ratios, are printed.
# Usage: bench/text_columns_bench.sh   (BUILD_DIR, ROUNDS, SECONDS_EACH, BATCH)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-8}
BATCH=${BATCH:-1}
cmake -S . -B "$BUILD_DIR" -G Ninja >/dev/null
ninja -C "$BUILD_DIR" kiln >/dev/null
source bench/lib.sh
print_machine
echo "batch:   $BATCH row(s) per request"
tmp=$(mktemp -d /tmp/kiln-text-bench.XXXXXX)
export KILN_HOME="$tmp/home"
trap 'stop_background_and_clean; rm -rf "$tmp"' EXIT
kiln="$BUILD_DIR/kiln"
# The table, and both bodies of its first BATCH rows.
/usr/bin/python3 - "$tmp" "$BATCH" <<'PY'
import csv, json, sys
out, batch = sys.argv[1], int(sys.argv[2])
rows = list(csv.reader(open("../shared/datasets/breast_cancer.csv")))
header, rows = rows[0], rows[1:]
site = lambda i, r: "" if i % 7 == 0 else "east" if i % 5 == 0 else ("north" if r[-1] == "malignant" else "south")
with open(f"{out}/sites.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header + ["site"])
    for i, r in enumerate(rows):
        w.writerow(r + [site(i, r)])
codes = {"": 0, "east": 1, "north": 2, "south": 3}  # sorted: <missing>, east, north, south
picked = [(i, rows[i]) for i in range(batch)]
fp32 = [[float(c) for c in r[:-1]] + [codes[site(i, r)]] for i, r in picked]
text = [r[:-1] + [site(i, r)] for i, r in picked]
for name, dtype, data in (("fp32", "FP32", fp32), ("bytes", "BYTES", text)):
    json.dump({"inputs": [{"name": "input", "shape": [batch, 31], "datatype": dtype, "data": data}]},
              open(f"{out}/{name}.json", "w"))
PY
"$kiln" train --data "$tmp/sites.csv" --target diagnosis --model mlp --out "$tmp/run" >/dev/null 2>&1

taskset -c 1 "$kiln" serve --model "sites=$tmp/run/bundle" --port 0 --threads 1 \
  >"$tmp/serve.out" 2>"$tmp/serve.log" &
pid=$!
pids+=("$pid")
wait_serve_ready "$tmp/serve.out" "$tmp/serve.log" "$pid"
url=$(grep -o 'http://[0-9.:]*' "$tmp/serve.out")/v2/models/sites/infer
# Both forms answer the same.
for form in fp32 bytes; do
  curl -s -X POST --data-binary "@$tmp/$form.json" "$url" >"$tmp/$form.answer"
done
/usr/bin/python3 - "$tmp/fp32.answer" "$tmp/bytes.answer" <<'PY'
import json, sys
a, b = (json.load(open(p))["outputs"][0]["data"] for p in sys.argv[1:])
assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)
PY

run_one() {  # $1 = body form; prints achieved req/s and server CPU microseconds per request
  local ticks0 ticks1
  ticks0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  taskset -c 0 "$kiln" loadtest "$url" --body "$tmp/$1.json" --connections 16 \
    --duration "$SECONDS_EACH" --json >"$tmp/lt.json"
  ticks1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  /usr/bin/python3 - "$tmp/lt.json" "$((ticks1 - ticks0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["errors"]["total"] == 0, r["errors"]
done = max(1, r["requests"]["completed"])
print(round(r["achieved_rate_per_s"]), f"{int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / done:.1f}")
PY
}

: >"$tmp/results"
for round in $(seq 1 "$ROUNDS"); do
  for form in fp32 bytes; do
    read -r rate cpu < <(run_one "$form")
    echo "round $round $form: $rate req/s, $cpu us CPU per request"
    echo "$form $rate $cpu" >>"$tmp/results"
  done
done
/usr/bin/python3 - "$tmp/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {f: (statistics.median(float(r[1]) for r in rows if r[0] == f),
           statistics.median(float(r[2]) for r in rows if r[0] == f)) for f in ("fp32", "bytes")}
for f, (rate, cpu) in med.items():
    print(f"median {f}: {rate:.0f} req/s, {cpu:.1f} us CPU per request")
print(f"bytes / fp32: rate {med['bytes'][0] / med['fp32'][0]:.2f}x, "
      f"CPU per request {med['bytes'][1] / med['fp32'][1]:.2f}x")
PY
