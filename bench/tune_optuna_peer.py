#!/usr/bin/python3
"""Optuna's TPE and random samplers on the sampler-quality functions of bench/tune_bench.sh
(all minimised), the peer numbers beside bench/tune_sampler_bench.cpp: per function and sampler
the best value after N trials for each seed, and the median over the seeds.

    tune_optuna_peer.py [TRIALS=100] [SEEDS=10] [SAMPLERS=tpe,random] [FUNCTIONS=all]
                        [FIRST_SEED=0]

SAMPLERS: tpe (TPESampler(seed=s), Optuna's defaults), tpe-mv (multivariate=True), random.
The functions and spaces are the same as in tune_sampler_bench.cpp (keep them in step)."""
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


def styblinski_tang4(trial):
    # min -39.16599 * 4 = -156.66466 at x_i = -2.903534
    x = [trial.suggest_float(f"x{j + 1}", -5, 5) for j in range(4)]
    return sum(v ** 4 - 16 * v ** 2 + 5 * v for v in x) / 2


def rosenbrock4(trial):
    # min 0 at x_i = 1
    x = [trial.suggest_float(f"x{j + 1}", -2, 2) for j in range(4)]
    return sum(100 * (x[j + 1] - x[j] ** 2) ** 2 + (1 - x[j]) ** 2 for j in range(3))


CAT_OFFSET = {"relu": 0.0, "gelu": 0.15, "tanh": 0.5, "sigmoid": 1.0}


def mixed(trial):
    # A hyperparameter-like toy: log float, stepped int, categorical, plain float; min 0 at
    # lr = 1e-3, width = 96, act = relu, dropout = 0.2.
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    width = trial.suggest_int("width", 16, 256, step=16)
    act = trial.suggest_categorical("act", ["relu", "gelu", "tanh", "sigmoid"])
    dropout = trial.suggest_float("dropout", 0.0, 0.8)
    return ((math.log10(lr) + 3) ** 2 / 4 + ((width - 96) / 64) ** 2 + CAT_OFFSET[act] +
            4 * (dropout - 0.2) ** 2)


FUNCTIONS = {"branin": branin, "hartmann6": hartmann6, "styblinski_tang4": styblinski_tang4,
             "rosenbrock4": rosenbrock4, "mixed": mixed}


def make_sampler(name, seed):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "tpe-mv":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)


def main():
    import warnings
    warnings.filterwarnings("ignore")
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    samplers = (sys.argv[3] if len(sys.argv) > 3 else "tpe,random").split(",")
    names = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] != "all" else list(
        FUNCTIONS)
    first = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    out = {"optuna": optuna.__version__}
    for name in names:
        f = FUNCTIONS[name]
        out[name] = {}
        for sname in samplers:
            bests = []
            for seed in range(first, first + seeds):
                study = optuna.create_study(direction="minimize",
                                            sampler=make_sampler(sname, seed))
                study.optimize(f, n_trials=trials)
                bests.append(study.best_value)
            med = statistics.median(bests)
            med10 = statistics.median(bests[:10])
            out[name][sname] = {"median_best": med10, "median_best_all": med, "bests": bests}
            print(f"{name:16s} optuna {sname:14s} median best, seeds {first}-"
                  f"{first + min(seeds, 10) - 1}: {med10:.6f}   seeds {first}-{first + seeds - 1}: "
                  f"{med:.6f}", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
