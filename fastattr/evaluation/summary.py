"""Table cells from per-image values: each metric's dataset statistic (the same number one metric
call on all images gives) with a 95% bootstrap confidence interval over images.

The bootstrap resamples images with replacement (the same resamples for every row, so rows are
compared on the same draws), recomputes the statistic on each resample, and reports the 2.5 and
97.5 percentiles. Seeded: the same values give the same intervals, byte for byte."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# table columns per metric: (column title, key, higher is better)
COLUMNS = {
    "insertion": [("Insertion ↑", "insertion", True)],
    "deletion": [("Deletion ↓", "deletion", False)],
    "pic_pair": [("SIC pair ↑", "sic_pair", True), ("AIC pair ↑", "aic_pair", True)],
    "pic_entropy": [("SIC ent ↑", "sic_entropy", True), ("AIC ent ↑", "aic_entropy", True)],
    "pic_msssim": [("SIC MS-SSIM ↑", "sic_msssim", True), ("AIC MS-SSIM ↑", "aic_msssim", True)],
    "localization": [("Loc AUC ↑", "loc_auc", True), ("Loc F1 ↑", "loc_f1", True), ("Loc MAE ↓", "loc_mae", False),
                     ("Loc AUC abs ↑", "loc_auc_abs", True)],
}


@dataclass
class Cell:
    """One table cell: the statistic over all images and its 95% bootstrap interval (NaN if none)."""

    value: float
    low: float = float("nan")
    high: float = float("nan")


def binned_aucs(levels: np.ndarray, ratios: np.ndarray, correct: np.ndarray, bins: int = 100) -> tuple[float, float]:
    """(SIC AUC, AIC AUC) of the IDGI paper's binned curves: the same numbers as
    metrics.pic_idgi.binned_curves, vectorised (sorts and bincounts) for the bootstrap."""
    lv, r, a = levels.reshape(-1), ratios.reshape(-1), correct.reshape(-1)
    keep = np.isfinite(lv)
    lv, r, a = lv[keep], r[keep], a[keep]
    if lv.size == 0:
        return float("nan"), float("nan")
    idx = np.clip(np.floor(lv * bins).astype(np.int64), 0, bins - 1)
    order = np.lexsort((r, idx))
    idx_s, r_s = idx[order], r[order]
    counts = np.bincount(idx_s, minlength=bins)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    filled = counts > 0
    lo = starts[filled] + (counts[filled] - 1) // 2
    hi = starts[filled] + counts[filled] // 2
    sic = (r_s[lo] + r_s[hi]) / 2  # median: the middle value, or the mean of the middle two
    aic = np.bincount(idx, weights=a, minlength=bins)[filled] / counts[filled]
    centres = (np.arange(bins) + 0.5) / bins
    xs = centres[filled]
    return float(np.interp(centres, xs, sic).mean()), float(np.interp(centres, xs, aic).mean())


def _nanmean(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def statistics(values: dict[str, np.ndarray], metrics: list[str], min_pred: float) -> dict:
    """{column key: f(image indices) -> float} for one variant; values: per-image arrays (n,) or
    (n, L) named as scoring.flatten names them."""
    from fastattr.metrics.pic import aggregate_pair, pair_curves

    out = {}
    for kind in ("insertion", "deletion"):
        if kind in metrics:
            out[kind] = lambda i, v=values[kind]: _nanmean(v[i])
    if "pic_pair" in metrics:
        for name, how in (("sic", "median"), ("aic", "mean")):
            curves, _, _ = pair_curves(values["pair_entropies"], values[f"pair_{name}_preds"], min_pred)
            out[f"{name}_pair"] = lambda i, c=curves, how=how: aggregate_pair(c[i], how)
    for info in ("entropy", "msssim"):
        if f"pic_{info}" in metrics:
            lv, ra, co = (values[f"{info}_{k}"] for k in ("levels", "ratios", "correct"))
            out[f"sic_{info}"] = lambda i, lv=lv, ra=ra, co=co: binned_aucs(lv[i], ra[i], co[i])[0]
            out[f"aic_{info}"] = lambda i, lv=lv, ra=ra, co=co: binned_aucs(lv[i], ra[i], co[i])[1]
    if "localization" in metrics:
        for key in ("loc_auc", "loc_f1", "loc_mae", "loc_auc_abs"):
            out[key] = lambda i, v=values[key]: _nanmean(v[i])
    return out


def resamples(n: int, count: int, seed: int = 0) -> np.ndarray:
    """(count, n) image indices drawn with replacement, seeded."""
    return np.random.default_rng(seed).integers(0, n, size=(count, n)) if n else np.zeros((count, 0), int)


def cells(values: dict[str, np.ndarray], n: int, metrics: list[str], min_pred: float,
          draws: np.ndarray) -> dict[str, Cell]:
    """{column key: Cell} for one variant of n images (values as in statistics()); draws (B, n)
    from resamples() (B = 0: no interval)."""
    out = {}
    for key, stat in statistics(values, metrics, min_pred).items():
        value = stat(np.arange(n)) if n else float("nan")
        cell = Cell(value)
        if n >= 2 and len(draws):
            boot = np.array([stat(d) for d in draws])
            boot = boot[np.isfinite(boot)]
            if boot.size:
                cell.low, cell.high = (float(q) for q in np.percentile(boot, [2.5, 97.5]))
        out[key] = cell
    return out
