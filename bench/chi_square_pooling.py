#!/usr/bin/python3
"""False-alarm rate of the chi-square drift test on categorical columns, pooled or not.

Windows are drawn from the reference distribution itself (no drift), so every alarm is false;
at alpha 0.05 a well-calibrated test alarms in ~5% of windows. Categories follow a Zipf law
(share ~ 1/rank^1.1). "unpooled" is scipy.stats.chisquare over every category (what Evidently
and Kiln before the change did); "pooled" merges the categories expected fewer than 5 times
into one cell, which joins the smallest other cell while still short (Kiln's
monitor::chi_square_test). Usage: bench/chi_square_pooling.py [WINDOWS]   (default 2000)
"""
import sys

import numpy as np
from scipy.stats import chisquare


def pooled_test(counts, expected):
    small = expected < 5
    if not small.any():
        return chisquare(counts, expected).pvalue
    c, e = list(counts[~small]), list(expected[~small])
    pc, pe = counts[small].sum(), expected[small].sum()
    if pe < 5 and e:
        i = int(np.argmin(e))
        c[i] += pc
        e[i] += pe
    else:
        c.append(pc)
        e.append(pe)
    if len(c) < 2:
        return 1.0
    return chisquare(c, e).pvalue


def main():
    windows = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rng = np.random.default_rng(0)
    print("categories  window_rows  cells_expected_<5  unpooled_FPR  pooled_FPR")
    for k, n in [(10, 1000), (50, 1000), (200, 1000), (200, 200), (1000, 1000)]:
        p = 1 / np.arange(1, k + 1) ** 1.1
        p /= p.sum()
        e = p * n
        raw = pooled = 0
        for _ in range(windows):
            c = rng.multinomial(n, p)
            raw += chisquare(c, e).pvalue <= 0.05
            pooled += pooled_test(c, e) <= 0.05
        print(f"{k:10d}  {n:11d}  {int((e < 5).sum()):17d}  {raw / windows:12.3f}  "
              f"{pooled / windows:10.3f}")


if __name__ == "__main__":
    main()
