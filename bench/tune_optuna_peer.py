#!/usr/bin/python3
"""Optuna's TPE and random samplers on Branin and Hartmann-6 (minimised), the peer numbers for
bench/tune_bench.sh: median over seeds of the best value after N trials."""
import json
import math
import statistics
import sys

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)

A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
     [17, 8, 0.05, 10, 0.1, 14]]
P = [[0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
     [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
     [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
     [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381]]
ALPHA = [1.0, 1.2, 3.0, 3.2]


def branin(trial):
    x1 = trial.suggest_float("x1", -5, 10)
    x2 = trial.suggest_float("x2", 0, 15)
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 * x1 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def hartmann6(trial):
    x = [trial.suggest_float(f"x{j + 1}", 0, 1) for j in range(6)]
    s = 0.0
    for i in range(4):
        s += ALPHA[i] * math.exp(-sum(A[i][j] * (x[j] - P[i][j]) ** 2 for j in range(6)))
    return -s


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    out = {"optuna": optuna.__version__}
    for name, f in (("branin", branin), ("hartmann6", hartmann6)):
        out[name] = {}
        for sname in ("tpe", "random"):
            bests = []
            for seed in range(seeds):
                sampler = (optuna.samplers.TPESampler(seed=seed) if sname == "tpe" else
                           optuna.samplers.RandomSampler(seed=seed))
                study = optuna.create_study(direction="minimize", sampler=sampler)
                study.optimize(f, n_trials=trials)
                bests.append(study.best_value)
            med = statistics.median(bests)
            out[name][sname] = {"median_best": med, "bests": bests}
            print(f"{name:10s} optuna {sname:6s} median best over {seeds} seeds ({trials} trials): "
                  f"{med:.6f}", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
