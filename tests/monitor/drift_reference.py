"""Independent computation of Kiln's drift formulas (numpy/scipy, written from the formulas, not
from Kiln's code), for tests/monitor/drift_test.cpp.

usage: drift_reference.py CSV REF_ROWS SHIFT_COLUMN SHIFT_FACTOR [TARGET_COLUMN]
Reference = the first REF_ROWS rows, current = the rest with column SHIFT_COLUMN multiplied by
SHIFT_FACTOR; every column but TARGET_COLUMN (default diagnosis) is a feature. Prints JSON: per
numeric column, PSI on the reference's 10 quantile bins and the two-sample KS statistic and
p-value (asymptotic Kolmogorov with Stephens' correction), plus scipy's ks_2samp statistic for
the same samples. A column whose reference values are integers with 2 to 10 distinct codes is
categorical: PSI on the codes' shares (plus a bin for unseen codes) and scipy's chisquare of the
current counts against the reference shares."""
import csv, json, math, sys

import numpy as np
from scipy.stats import chisquare, ks_2samp

path, ref_rows, shift_col, factor = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
with open(path) as f:
    rows = list(csv.DictReader(f))
target = sys.argv[5] if len(sys.argv) > 5 else "diagnosis"
names = [n for n in rows[0] if n != target]


def psi(ref, cur):
    def floor(s):
        nz = s[s > 0]
        m = nz.min() if nz.size else 1.0
        return m / 1e6 if m <= 1e-4 else 1e-4
    e = np.where(ref > 0, ref, floor(ref))
    a = np.where(cur > 0, cur, floor(cur))
    return float(np.sum((a - e) * np.log(a / e)))


def kolmogorov_q(lam):
    if lam <= 0:
        return 1.0
    total, prev = 0.0, 0.0
    for j in range(1, 101):
        term = 2.0 * (-1) ** (j - 1) * math.exp(-2.0 * j * j * lam * lam)
        total += term
        if abs(term) <= 0.001 * prev or abs(term) <= 1e-8 * total:
            return min(max(total, 0.0), 1.0)
        prev = abs(term)
    return 1.0


out = {}
for name in names:
    values = np.array([float(r[name]) for r in rows])
    ref, cur = values[:ref_rows], values[ref_rows:].copy()
    if name == shift_col:
        cur *= factor
    codes = np.unique(ref)
    if np.all(ref == np.round(ref)) and 2 <= codes.size <= 10:
        ref_shares = np.array([np.mean(ref == c) for c in codes])
        counts = np.array([np.sum(cur == c) for c in codes], dtype=float)
        unseen = float(cur.size - counts.sum())
        chi = chisquare(counts, ref_shares * counts.sum())
        p = psi(np.append(ref_shares, 0.0), np.append(counts, unseen) / cur.size)
        out[name] = {"test": "chi_square", "psi": p, "statistic": float(chi.statistic),
                     "p_value": float(chi.pvalue), "out_of_vocabulary": unseen}
        continue
    edges = []
    for k in range(1, 10):
        e = float(np.quantile(ref, k / 10))
        if not edges or e > edges[-1]:
            edges.append(e)
    bins_ref = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    bins_cur = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
    p = psi(bins_ref / bins_ref.sum(), bins_cur / bins_cur.sum())
    # D = max |F_ref - F_cur| over the pooled sample (empirical CDFs, right-continuous).
    pooled = np.concatenate([ref, cur])
    cdf_ref = np.searchsorted(np.sort(ref), pooled, side="right") / ref.size
    cdf_cur = np.searchsorted(np.sort(cur), pooled, side="right") / cur.size
    d = float(np.max(np.abs(cdf_ref - cdf_cur)))
    en = math.sqrt(ref.size * cur.size / (ref.size + cur.size))
    out[name] = {"test": "ks", "psi": p, "statistic": d,
                 "p_value": kolmogorov_q((en + 0.12 + 0.11 / en) * d),
                 "scipy_ks_statistic": float(ks_2samp(ref, cur).statistic)}
print(json.dumps(out))
