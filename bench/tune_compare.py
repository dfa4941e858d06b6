#!/usr/bin/python3
"""Kiln's TPE against Optuna's on the same seeds: per function, the median best of each, a
bootstrap 95% interval of the difference of medians (Kiln - Optuna; negative = Kiln better, all
functions are minimised) and a one-sided Mann-Whitney p-value for "Kiln is better".

    tune_compare.py KILN.json OPTUNA.json [KILN_SAMPLER=tpe] [OPTUNA_SAMPLER=tpe]

KILN.json is the last line `tune_sampler_bench` prints, OPTUNA.json the last line of
`tune_optuna_peer.py`, both run with the same --trials, seeds and first seed."""
import json
import random
import statistics
import sys

from scipy.stats import mannwhitneyu


def last_json(path):
    with open(path) as f:
        lines = [line for line in f if line.startswith("{")]
    return json.loads(lines[-1])


def main():
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    kiln, optuna = last_json(sys.argv[1]), last_json(sys.argv[2])
    ks = sys.argv[3] if len(sys.argv) > 3 else "tpe"
    os_ = sys.argv[4] if len(sys.argv) > 4 else "tpe"
    rng = random.Random(0)
    print(f"{'function':16s} {'n':>4s} {'Kiln ' + ks:>16s} {'Optuna ' + os_:>16s} "
          f"{'difference, 95% interval':>28s} {'p (Kiln better)':>16s}")
    for name, by_sampler in kiln.items():
        if name not in optuna or ks not in by_sampler or os_ not in optuna[name]:
            continue
        a, b = by_sampler[ks]["bests"], optuna[name][os_]["bests"]
        diffs = sorted(
            statistics.median(rng.choices(a, k=len(a))) -
            statistics.median(rng.choices(b, k=len(b))) for _ in range(10000))
        lo, hi = diffs[249], diffs[9749]
        p = mannwhitneyu(a, b, alternative="less").pvalue
        interval = f"[{lo:+.4g}, {hi:+.4g}]"
        print(f"{name:16s} {len(a):4d} {statistics.median(a):16.6g} {statistics.median(b):16.6g} "
              f"{interval:>28s} {p:16.3g}")


if __name__ == "__main__":
    main()
