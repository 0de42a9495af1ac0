"""Per-image metric values of one group of images for one method variant: what eval stores in its
shards. Aggregates (means, PAIR's median curve, the IDGI paper's bins) are made later from these
values over the whole dataset (evaluation/summary.py), so they equal one call on all images."""
from __future__ import annotations

import math

import numpy as np
import torch

METRICS = ("insertion", "deletion", "pic_pair", "pic_entropy", "pic_msssim", "localization")


def _f(v) -> float | None:
    """A float for JSON (NaN/inf -> None)."""
    v = float(v)
    return v if math.isfinite(v) else None


def _floats(a) -> list:
    return [_f(v) for v in torch.as_tensor(a).reshape(-1).tolist()]


def score_maps(engine, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, metrics: list[str],
               masks: torch.Tensor | None, has_mask: torch.Tensor | None, random_masks: torch.Tensor,
               min_pred: float, workers: int, pair_ref=None) -> list[dict]:
    """One dict per image of x (G, 3, H, W) with maps (G, C, H, W) explained for target (G,):
    'insertion', 'deletion' (AUCs), 'insertion_curve', 'deletion_curve' (21 points), 'pair'
    (PAIR's raw points: entropies, SIC and AIC predictions, 2 + 13 each) with per-image 'sic_pair',
    'aic_pair' AUCs, 'entropy' / 'msssim' (the IDGI variant's levels, ratios, correct, 25 each),
    'loc_auc', 'loc_f1', 'loc_mae', 'loc_auc_abs' (images with a mask). engine: a probability
    Engine of the model; pair_ref: metrics.pic.pair_reference of x (shared by all variants)."""
    from fastattr import metrics as M

    g = x.shape[0]
    rows = [{} for _ in range(g)]
    if "insertion" in metrics or "deletion" in metrics:
        r = M.insertion_deletion(engine, x, maps, target)
        for kind in ("insertion", "deletion"):
            if kind in metrics:
                for i in range(g):
                    rows[i][kind] = _f(r[kind][i])
                    rows[i][f"{kind}_curve"] = _floats(r[f"{kind}_curve"][i])
    if "pic_pair" in metrics:
        r = M.pic(engine, x, maps, target, random_masks=random_masks, min_pred=min_pred, workers=workers,
                  reference=pair_ref)
        for i in range(g):
            rows[i]["pair"] = {k: _floats(r.per_image[k][i]) for k in ("entropies", "sic_preds", "aic_preds")}
            rows[i]["sic_pair"] = _f(r.per_image["sic_auc"][i])
            rows[i]["aic_pair"] = _f(r.per_image["aic_auc"][i])
            rows[i]["sic_pair_skip"] = r.per_image["sic_skip"][i]
            rows[i]["aic_pair_skip"] = r.per_image["aic_skip"][i]
    infos = [info for info in ("entropy", "msssim") if f"pic_{info}" in metrics]
    if infos:  # one set of bokeh images and forwards for both information levels
        from fastattr.metrics.pic import pic_idgi_levels

        for info, r in pic_idgi_levels(engine, x, maps, target, infos=infos, workers=workers).items():
            for i in range(g):
                rows[i][info] = {k: _floats(r.per_image[k][i]) for k in ("levels", "ratios", "correct")}
    if "localization" in metrics and has_mask is not None and bool(has_mask.any()):
        k = has_mask.nonzero().squeeze(1)
        loc = M.localization(maps[k], masks[k])
        loc_abs = M.localization(maps[k], masks[k], absolute=True)
        for j, i in enumerate(k.tolist()):
            rows[i].update(loc_auc=_f(loc["auc"][j]), loc_f1=_f(loc["f1"][j]), loc_mae=_f(loc["mae"][j]),
                           loc_auc_abs=_f(loc_abs["auc"][j]))
    return rows


def as_array(values: list) -> np.ndarray:
    """Stored values (floats, or lists of floats; None = NaN) -> float64 array (R,) or (R, L)."""
    def conv(v):
        return np.nan if v is None else v

    return np.array([[conv(u) for u in v] if isinstance(v, list) else conv(v) for v in values], dtype=np.float64)


def flatten(row: dict) -> dict[str, object]:
    """One stored per-image row as flat {name: float or list of floats} (nested PIC data joined
    with '_': 'pair_entropies', 'entropy_levels', ...): what the summary keeps in arrays."""
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update({f"{k}_{kk}": vv for kk, vv in v.items()})
        elif isinstance(v, (int, float, list)) or v is None:
            out[k] = v
    return out
